
-- ---------------------------------------------------------------------
-- Sending accounts
-- ---------------------------------------------------------------------

-- An account is a FOREIGN SERVER of this wrapper; its user mappings hold
-- the secrets (api_key, webhook_secret), which only superusers can read.
-- The wrapper has no handler: it carries no foreign tables, only options,
-- checked by the validator.  USAGE on the wrapper is granted to nobody, so
-- only superusers create accounts; USAGE on an account decides who may
-- send through it.
CREATE FUNCTION maileroo_fdw_validator(options text[], catalog oid)
RETURNS void
AS 'MODULE_PATHNAME', 'maileroo_fdw_validator'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION maileroo_fdw_validator(text[], oid) IS
	'Check the options of maileroo_fdw servers (accounts) and user mappings (their secrets)';
REVOKE ALL ON FUNCTION maileroo_fdw_validator(text[], oid) FROM PUBLIC;

CREATE FOREIGN DATA WRAPPER maileroo_fdw VALIDATOR maileroo_fdw_validator;
COMMENT ON FOREIGN DATA WRAPPER maileroo_fdw IS
	'Maileroo sending accounts: one foreign server per account, the key in a user mapping or a key file';
