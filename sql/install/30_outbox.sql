
-- ---------------------------------------------------------------------
-- Outbox and delivery worker
-- ---------------------------------------------------------------------

-- One row per queued message.  maileroo_send writes it inside the caller's
-- transaction; the delivery worker sends it after commit and records the
-- outcome.  Rows are never deleted by the extension.
--
-- The status is a domain over text rather than a table CHECK constraint:
-- a table constraint is deserialised and planned by every INSERT, which was
-- a fifth of the cost of maileroo_send; a domain's check is cached.
CREATE DOMAIN maileroo_outbox_status AS text
	CHECK (VALUE IN ('queued', 'sending', 'retrying', 'sent', 'failed',
					 'cancelled', 'suppressed'));
COMMENT ON DOMAIN maileroo_outbox_status IS 'Delivery state of a message in maileroo_outbox';

CREATE TABLE maileroo_outbox (
	reference_id text PRIMARY KEY,
	endpoint text NOT NULL,
	request json NOT NULL,
	status maileroo_outbox_status NOT NULL DEFAULT 'queued',
	attempts integer NOT NULL DEFAULT 0,
	-- Higher is claimed first: 100 for ordinary mail, lower for campaigns.
	priority smallint NOT NULL DEFAULT 100,
	next_attempt_at timestamptz NOT NULL DEFAULT now(),
	lease_until timestamptz,
	created_at timestamptz NOT NULL DEFAULT now(),
	sent_at timestamptz,
	last_http_status integer,
	last_error text,
	response jsonb,
	queued_by name NOT NULL DEFAULT current_user,
	-- The sending account (a maileroo_fdw server) the worker sends it
	-- through: its name, never its key.
	account text NOT NULL,
	-- The maileroo_campaigns row of a campaign message; NULL for ordinary
	-- mail.  No foreign key: its check would run once per queued row (an
	-- index probe and a row lock on the campaign for every message); only
	-- maileroo_send_campaign writes it, the extension never deletes a
	-- campaign, and the worker fails the rows of one deleted by hand.
	campaign_id bigint
);

-- What the worker claims next, and what it must look after.
CREATE INDEX maileroo_outbox_due_idx ON maileroo_outbox (next_attempt_at)
	WHERE status IN ('queued', 'retrying') AND campaign_id IS NULL;
-- Campaign mail is claimed apart, into bulk requests, after ordinary mail.
CREATE INDEX maileroo_outbox_campaign_due_idx ON maileroo_outbox (next_attempt_at)
	WHERE status IN ('queued', 'retrying') AND campaign_id IS NOT NULL;
CREATE INDEX maileroo_outbox_campaign_idx ON maileroo_outbox (campaign_id)
	WHERE campaign_id IS NOT NULL;
CREATE INDEX maileroo_outbox_sending_idx ON maileroo_outbox (lease_until)
	WHERE status = 'sending';

COMMENT ON TABLE maileroo_outbox IS 'Mail queued by maileroo_send, one row per message, with its delivery state';

-- A role sees (and may change) only the rows it queued; the owner and
-- superusers see everything.  Nothing is granted to PUBLIC: an admin grants
-- SELECT to the roles that should follow their own mail.
ALTER TABLE maileroo_outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY maileroo_outbox_own_rows ON maileroo_outbox
	USING (queued_by = current_user)
	WITH CHECK (queued_by = current_user);
REVOKE ALL ON maileroo_outbox FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('maileroo_outbox', '');

CREATE FUNCTION maileroo_send(
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
AS 'MODULE_PATHNAME', 'maileroo_send'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION maileroo_send(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text)
	IS 'Queue one message in maileroo_outbox; the delivery worker sends it after commit.  Returns its reference_id';
REVOKE ALL ON FUNCTION maileroo_send(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text) FROM PUBLIC;

CREATE FUNCTION maileroo_send_template(
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
AS 'MODULE_PATHNAME', 'maileroo_send_template'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION maileroo_send_template(text, text, text, bigint, jsonb, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text)
	IS 'Queue one message built from a Maileroo template; the delivery worker sends it after commit.  Returns its reference_id';
REVOKE ALL ON FUNCTION maileroo_send_template(text, text, text, bigint, jsonb, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text) FROM PUBLIC;

CREATE FUNCTION maileroo_cancel(reference_id text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'maileroo_cancel'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION maileroo_cancel(text)
	IS 'Cancel a queued or retrying message the caller queued (or any, for the owner); true when it was cancelled';
REVOKE ALL ON FUNCTION maileroo_cancel(text) FROM PUBLIC;

-- What the worker of this database reports from shared memory.
CREATE FUNCTION maileroo_worker_info(
	OUT running boolean,
	OUT pid integer,
	OUT in_flight integer,
	OUT delivered bigint,
	OUT given_up bigint,
	OUT last_error text,
	OUT last_error_at timestamptz,
	OUT started_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'maileroo_worker_info'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION maileroo_worker_info()
	IS 'State of the delivery worker serving this database (used by maileroo_worker_status)';
REVOKE ALL ON FUNCTION maileroo_worker_info() FROM PUBLIC;

CREATE FUNCTION maileroo_worker_status(
	OUT running boolean,
	OUT pid integer,
	OUT database name,
	OUT queued bigint,
	OUT retrying bigint,
	OUT sending bigint,
	OUT sent bigint,
	OUT failed bigint,
	OUT cancelled bigint,
	OUT suppressed bigint,
	OUT in_flight integer,
	OUT last_error text,
	OUT last_error_at timestamptz,
	OUT started_at timestamptz)
RETURNS record
LANGUAGE sql VOLATILE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT w.running, w.pid, current_database()::name,
	   q.queued, q.retrying, q.sending, q.sent, q.failed, q.cancelled, q.suppressed,
	   w.in_flight, w.last_error, w.last_error_at, w.started_at
  FROM @extschema@.maileroo_worker_info() w,
	   (SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
			   count(*) FILTER (WHERE status = 'retrying') AS retrying,
			   count(*) FILTER (WHERE status = 'sending') AS sending,
			   count(*) FILTER (WHERE status = 'sent') AS sent,
			   count(*) FILTER (WHERE status = 'failed') AS failed,
			   count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
			   count(*) FILTER (WHERE status = 'suppressed') AS suppressed
		  FROM @extschema@.maileroo_outbox) q
$$;
COMMENT ON FUNCTION maileroo_worker_status()
	IS 'The delivery worker of this database: running or not, queue depth by status, requests in flight, last error';
REVOKE ALL ON FUNCTION maileroo_worker_status() FROM PUBLIC;
