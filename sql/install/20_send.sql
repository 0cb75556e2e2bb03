
-- ---------------------------------------------------------------------
-- Sending
-- ---------------------------------------------------------------------

-- A file attached to a message.  content is the raw bytes; the request
-- carries them as base64.
CREATE TYPE maileroo_attachment AS (
	file_name text,
	content bytea,
	content_type text,
	inline boolean
);
COMMENT ON TYPE maileroo_attachment IS 'A file attached to a Maileroo message';

CREATE FUNCTION maileroo_attachment(file_name text, content bytea,
	content_type text DEFAULT 'application/octet-stream',
	inline boolean DEFAULT false)
RETURNS maileroo_attachment
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ROW(file_name, content, content_type, inline)::@extschema@.maileroo_attachment;
COMMENT ON FUNCTION maileroo_attachment(text, bytea, text, boolean) IS
	'Build an attachment for the send functions';

CREATE FUNCTION maileroo_reference_id()
RETURNS text
AS 'MODULE_PATHNAME', 'maileroo_reference_id'
LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION maileroo_reference_id() IS
	'A new reference id: 12 random bytes as 24 lowercase hexadecimal characters';

CREATE FUNCTION maileroo_send_now(
	sender text,
	recipients text,
	subject text,
	html text DEFAULT NULL,
	plain text DEFAULT NULL,
	cc text DEFAULT NULL,
	bcc text DEFAULT NULL,
	reply_to text DEFAULT NULL,
	tags jsonb DEFAULT NULL,
	headers jsonb DEFAULT NULL,
	attachments maileroo_attachment[] DEFAULT NULL,
	tracking boolean DEFAULT NULL,
	scheduled_at timestamptz DEFAULT NULL,
	reference_id text DEFAULT NULL,
	ignore_suppressions boolean DEFAULT false,
	account text DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'maileroo_send_now'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION maileroo_send_now(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text) IS
	'Send one message through Maileroo now; returns its reference_id';

CREATE FUNCTION maileroo_send_template_now(
	sender text,
	recipients text,
	subject text,
	template_id bigint,
	template_data jsonb DEFAULT NULL,
	cc text DEFAULT NULL,
	bcc text DEFAULT NULL,
	reply_to text DEFAULT NULL,
	tags jsonb DEFAULT NULL,
	headers jsonb DEFAULT NULL,
	attachments maileroo_attachment[] DEFAULT NULL,
	tracking boolean DEFAULT NULL,
	scheduled_at timestamptz DEFAULT NULL,
	reference_id text DEFAULT NULL,
	ignore_suppressions boolean DEFAULT false,
	account text DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'maileroo_send_template_now'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION maileroo_send_template_now(text, text, text, bigint, jsonb, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text) IS
	'Send one message from a Maileroo template now; returns its reference_id';

CREATE FUNCTION maileroo_scheduled(
	page integer DEFAULT 1,
	per_page integer DEFAULT 10,
	domain text DEFAULT NULL,
	account text DEFAULT NULL)
RETURNS TABLE (reference_id text, sender text, recipients text[], subject text,
	scheduled_at timestamptz, tags jsonb, headers jsonb)
AS 'MODULE_PATHNAME', 'maileroo_scheduled'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 10;
COMMENT ON FUNCTION maileroo_scheduled(integer, integer, text, text) IS
	'One page of the mail scheduled at Maileroo';

CREATE FUNCTION maileroo_cancel_scheduled(reference_id text, account text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'maileroo_cancel_scheduled'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION maileroo_cancel_scheduled(text, text) IS
	'Cancel a scheduled message; false when Maileroo does not know it';

-- Sending and reading Maileroo's data is the administrator's to grant.
REVOKE EXECUTE ON FUNCTION maileroo_send_now(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION maileroo_send_template_now(text, text, text, bigint, jsonb, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION maileroo_scheduled(integer, integer, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION maileroo_cancel_scheduled(text, text) FROM PUBLIC;
