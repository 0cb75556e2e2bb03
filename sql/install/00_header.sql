-- maileroo: send email through the Maileroo API and turn its webhooks into
-- typed event tables.  This script is assembled from sql/install/*.sql.

\echo Use "CREATE EXTENSION maileroo" to load this file. \quit

CREATE FUNCTION maileroo_version()
RETURNS text
AS 'MODULE_PATHNAME', 'maileroo_version'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION maileroo_version() IS 'Version of the loaded maileroo library';
