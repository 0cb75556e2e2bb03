
-- ---------------------------------------------------------------------
-- Webhook events
-- ---------------------------------------------------------------------

-- One row per webhook event, partitioned by type so that each documented
-- type has a table of its own; types Maileroo adds later land in
-- maileroo_events_other and are never lost.
CREATE TABLE maileroo_events (
	event_id text NOT NULL,
	event_type text NOT NULL,
	event_time timestamptz NOT NULL,
	inserted_at timestamptz,
	domain_id bigint,
	user_id bigint,
	message_id text,
	message_reference_id text,
	recipient text,
	ip inet,
	user_agent text,
	url text,
	reason text,
	smtp_code integer,
	smtp_status text,
	bounce_class text,
	tags jsonb,
	event_data jsonb NOT NULL,
	extra jsonb,
	received_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (event_id, event_type)
) PARTITION BY LIST (event_type);

CREATE TABLE maileroo_events_accepted PARTITION OF maileroo_events FOR VALUES IN ('accepted');
CREATE TABLE maileroo_events_delivered PARTITION OF maileroo_events FOR VALUES IN ('delivered');
CREATE TABLE maileroo_events_rejected PARTITION OF maileroo_events FOR VALUES IN ('rejected');
CREATE TABLE maileroo_events_deferred PARTITION OF maileroo_events FOR VALUES IN ('deferred');
CREATE TABLE maileroo_events_failed PARTITION OF maileroo_events FOR VALUES IN ('failed');
CREATE TABLE maileroo_events_opened PARTITION OF maileroo_events FOR VALUES IN ('opened');
CREATE TABLE maileroo_events_clicked PARTITION OF maileroo_events FOR VALUES IN ('clicked');
CREATE TABLE maileroo_events_complained PARTITION OF maileroo_events FOR VALUES IN ('complained');
CREATE TABLE maileroo_events_other PARTITION OF maileroo_events DEFAULT;

CREATE INDEX maileroo_events_event_time_idx ON maileroo_events (event_time);
CREATE INDEX maileroo_events_reference_idx ON maileroo_events (message_reference_id, event_time);
CREATE INDEX maileroo_events_tags_idx ON maileroo_events USING gin (tags);

COMMENT ON TABLE maileroo_events IS 'Maileroo webhook events, one row per event, partitioned by event_type';

-- Webhook bodies that were valid JSON but held an event that could not be
-- parsed: maileroo_ingest keeps them here, with the error, instead of
-- losing them.
CREATE TABLE maileroo_rejected_events (
	id bigserial PRIMARY KEY,
	received_at timestamptz NOT NULL DEFAULT now(),
	body text NOT NULL,
	error text NOT NULL,
	sqlstate text NOT NULL
);
COMMENT ON TABLE maileroo_rejected_events IS 'Webhook events maileroo_ingest could not parse, kept with their error';

-- pg_dump keeps the rows of the extension's tables.
SELECT pg_catalog.pg_extension_config_dump('maileroo_events', '');
SELECT pg_catalog.pg_extension_config_dump('maileroo_events_accepted', '');
SELECT pg_catalog.pg_extension_config_dump('maileroo_events_delivered', '');
SELECT pg_catalog.pg_extension_config_dump('maileroo_events_rejected', '');
SELECT pg_catalog.pg_extension_config_dump('maileroo_events_deferred', '');
SELECT pg_catalog.pg_extension_config_dump('maileroo_events_failed', '');
SELECT pg_catalog.pg_extension_config_dump('maileroo_events_opened', '');
SELECT pg_catalog.pg_extension_config_dump('maileroo_events_clicked', '');
SELECT pg_catalog.pg_extension_config_dump('maileroo_events_complained', '');
SELECT pg_catalog.pg_extension_config_dump('maileroo_events_other', '');
SELECT pg_catalog.pg_extension_config_dump('maileroo_rejected_events', '');
SELECT pg_catalog.pg_extension_config_dump('maileroo_rejected_events_id_seq', '');

REVOKE ALL ON maileroo_events, maileroo_rejected_events FROM PUBLIC;

CREATE FUNCTION maileroo_parse_event(body text)
RETURNS maileroo_events
AS 'MODULE_PATHNAME', 'maileroo_parse_event'
LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION maileroo_parse_event(text) IS 'Parse one Maileroo webhook event (JSON text) into a maileroo_events row';

CREATE FUNCTION maileroo_parse_event(body jsonb)
RETURNS maileroo_events
AS 'MODULE_PATHNAME', 'maileroo_parse_event_jsonb'
LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION maileroo_parse_event(jsonb) IS 'Parse one Maileroo webhook event (jsonb) into a maileroo_events row';

CREATE FUNCTION maileroo_parse_events(body text)
RETURNS SETOF maileroo_events
AS 'MODULE_PATHNAME', 'maileroo_parse_events'
LANGUAGE C STABLE STRICT PARALLEL SAFE ROWS 1;
COMMENT ON FUNCTION maileroo_parse_events(text) IS 'Parse a Maileroo webhook body (an event, an array of events or {"events": [...]}) into maileroo_events rows';

CREATE FUNCTION maileroo_event_bodies(body text)
RETURNS SETOF text
AS 'MODULE_PATHNAME', 'maileroo_event_bodies'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE ROWS 1;
COMMENT ON FUNCTION maileroo_event_bodies(text) IS 'Split a Maileroo webhook body into the JSON text of each event';

CREATE FUNCTION maileroo_verify_signature(body text, signature text, secret text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'maileroo_verify_signature'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION maileroo_verify_signature(text, text, text) IS 'True when signature is the hex HMAC-SHA256 of body under secret (optional sha256= prefix, either case)';

-- Raises unless the signature matches the webhook secret of the account
-- (or of any account, when account is NULL), when there is one.  Only
-- maileroo_ingest needs it.
CREATE FUNCTION maileroo_ingest_authenticate(body text, signature text, account text)
RETURNS void
AS 'MODULE_PATHNAME', 'maileroo_ingest_authenticate'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION maileroo_ingest_authenticate(text, text, text) IS 'Check a webhook signature against the sending accounts'' webhook secrets (used by maileroo_ingest)';
REVOKE ALL ON FUNCTION maileroo_ingest_authenticate(text, text, text) FROM PUBLIC;

-- The ingest endpoint: check the signature, then store every event once.
-- An event that does not parse is kept in maileroo_rejected_events.
CREATE FUNCTION maileroo_ingest(body text, signature text DEFAULT NULL,
	account text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	elem text;
	ev @extschema@.maileroo_events;
	n integer;
	total integer := 0;
	rid bigint;
	msg text;
	state text;
BEGIN
	PERFORM @extschema@.maileroo_ingest_authenticate(body, signature, account);
	IF body IS NULL THEN
		RAISE EXCEPTION 'webhook body is null' USING ERRCODE = 'null_value_not_allowed';
	END IF;

	FOR elem IN SELECT b FROM @extschema@.maileroo_event_bodies(body) AS b
	LOOP
		BEGIN
			ev := @extschema@.maileroo_parse_event(elem);
		EXCEPTION WHEN data_exception THEN
			GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
			INSERT INTO @extschema@.maileroo_rejected_events (body, error, sqlstate)
				VALUES (elem, msg, state) RETURNING id INTO rid;
			RAISE WARNING 'webhook event rejected: %', msg
				USING DETAIL = format('It is kept in maileroo_rejected_events with id %s.', rid);
			CONTINUE;
		END;
		-- Counted from RETURNING: on Citus the row count of an INSERT
		-- ... ON CONFLICT DO NOTHING includes the rows that conflicted.
		WITH ins AS (
			INSERT INTO @extschema@.maileroo_events SELECT (ev).* ON CONFLICT DO NOTHING
			RETURNING 1)
		SELECT count(*) INTO n FROM ins;
		total := total + n;
	END LOOP;
	RETURN total;
END
$$;
COMMENT ON FUNCTION maileroo_ingest(text, text, text) IS 'Verify and store a Maileroo webhook body; returns the number of new events';
REVOKE ALL ON FUNCTION maileroo_ingest(text, text, text) FROM PUBLIC;
