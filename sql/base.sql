-- The extension installs into any schema and drops without a trace.
CREATE SCHEMA mail;
CREATE EXTENSION maileroo SCHEMA mail;
SELECT mail.maileroo_version() = extversion AS version_matches
  FROM pg_extension WHERE extname = 'maileroo';
SELECT count(*) > 0 AS has_objects
  FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
 WHERE e.extname = 'maileroo' AND d.deptype = 'e';
DROP EXTENSION maileroo;
-- Nothing of it is left behind.
SELECT count(*) AS leftover_objects FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'mail';
SELECT count(*) AS leftover_functions FROM pg_proc WHERE proname LIKE 'maileroo%';
SELECT count(*) AS leftover_types FROM pg_type WHERE typname LIKE 'maileroo%' OR typname LIKE '_maileroo%';
DROP SCHEMA mail;
-- The settings exist, with their documented defaults.
SELECT name, boot_val, unit, context FROM pg_settings
 WHERE name LIKE 'maileroo.%' ORDER BY name;
SHOW maileroo.max_attempts;
SHOW maileroo.concurrency;
-- Reserved prefix: a misspelt setting is refused.
SET maileroo.api_kye = 'x';
-- No setting holds a key, a webhook secret or the API URL: those belong to
-- sending accounts, so the old names are refused like any unknown one.
SET maileroo.api_key = 'not-a-real-key';
ALTER DATABASE contrib_regression SET maileroo.api_key = 'not-a-real-key';
ALTER ROLE CURRENT_USER SET maileroo.webhook_secret = 'not-a-real-secret';
SET maileroo.api_url = 'https://example.com';
-- The extension can be created in a second database too.
CREATE EXTENSION maileroo;
CREATE DATABASE maileroo_second;
\c maileroo_second
CREATE EXTENSION maileroo;
SELECT maileroo_version() IS NOT NULL AS ok;
\c contrib_regression
DROP DATABASE maileroo_second;
DROP EXTENSION maileroo;
