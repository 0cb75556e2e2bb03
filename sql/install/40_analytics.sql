-- ---------------------------------------------------------------------
-- Analytics and suppressions
-- ---------------------------------------------------------------------
--
-- Everything here is derived from maileroo_outbox (what we sent, and when)
-- and maileroo_events (what Maileroo reported), joined on the reference id.
-- Events may arrive twice and out of order: duplicates are collapsed by the
-- events' primary key, and every "first"/"last" below is by event_time, not
-- by arrival.  Messages sent elsewhere (known only from their events) count
-- too.  Counts are of messages, not of events: a message delivered to two
-- recipients counts once as delivered.
--
-- Suppressions are fed by row triggers on three partitions only (failed,
-- complained, rejected), so storing the common events (delivered, opened,
-- clicked) costs nothing extra.

-- Supports maileroo_stats_by_tag's time range on the outbox.
CREATE INDEX maileroo_outbox_sent_at_idx ON maileroo_outbox (sent_at)
	WHERE sent_at IS NOT NULL;

-- The recipient addresses (to, cc, bcc) of a request body as stored in
-- maileroo_outbox.request: each an address object, a plain string, or an
-- array of these.  Like the other SQL functions below without a SET clause,
-- its body is in SQL-standard form, parsed when the extension is created:
-- nothing in it resolves through the caller's search_path.
CREATE FUNCTION maileroo_request_recipients(request json)
RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
BEGIN ATOMIC
	SELECT coalesce(array_agg(a.address ORDER BY f.ord, a.ord), '{}')
	  FROM unnest(ARRAY['to', 'cc', 'bcc']) WITH ORDINALITY AS f(field, ord)
	 CROSS JOIN LATERAL (
			SELECT CASE json_typeof(v) WHEN 'object' THEN v ->> 'address'
									   WHEN 'string' THEN v #>> '{}' END, i
			  FROM json_array_elements(CASE json_typeof(request -> f.field)
										 WHEN 'array' THEN request -> f.field
										 WHEN 'object' THEN json_build_array(request -> f.field)
										 WHEN 'string' THEN json_build_array(request -> f.field)
										 ELSE '[]'::json END) WITH ORDINALITY AS e(v, i)
		   ) AS a(address, ord)
	 WHERE a.address IS NOT NULL;
END;
COMMENT ON FUNCTION maileroo_request_recipients(json) IS
	'Recipient addresses (to, cc, bcc) of a Maileroo request body';

-- The bare address in 'a@x.com' or 'Jane Doe <a@x.com>', trimmed; NULL
-- when the text holds no single plausible address.
CREATE FUNCTION maileroo_address_part(address text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
BEGIN ATOMIC
	SELECT CASE WHEN a ~ '^[^[:space:]<>@,]+@[^[:space:]<>@,]+$' THEN a END
	  FROM (SELECT btrim(coalesce(substring(address FROM '<([^<>]*)>[[:space:]]*$'), address),
						 E' \t\r\n') AS a) s;
END;
COMMENT ON FUNCTION maileroo_address_part(text) IS
	'The bare email address in "a@x.com" or "Name <a@x.com>", or NULL when there is none';

-- ---------------------------------------------------------------------
-- Suppressions
-- ---------------------------------------------------------------------

CREATE TABLE maileroo_suppressions (
	address text NOT NULL,
	reason text NOT NULL
		CHECK (reason IN ('hard_bounce', 'complaint', 'rejection', 'manual')),
	event_id text,
	event_type text,
	created_at timestamptz NOT NULL DEFAULT now(),
	note text
);
CREATE UNIQUE INDEX maileroo_suppressions_address_key
	ON maileroo_suppressions (lower(address));
COMMENT ON TABLE maileroo_suppressions IS
	'Addresses maileroo_send leaves out: hard bounces, complaints and rejections from events, and manual entries';
-- pg_dump keeps the list: losing it on a restore would mail bounced
-- and complaining addresses again.
SELECT pg_catalog.pg_extension_config_dump('maileroo_suppressions', '');

-- Add an address by hand; true when it was not suppressed yet.
CREATE FUNCTION maileroo_suppress(address text, note text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	bare text := @extschema@.maileroo_address_part(address);
	added boolean;
BEGIN
	IF bare IS NULL THEN
		RAISE EXCEPTION 'invalid email address: "%"', address
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give one address, as a@example.com or Name <a@example.com>.';
	END IF;
	INSERT INTO @extschema@.maileroo_suppressions AS s (address, reason, note)
	VALUES (bare, 'manual', maileroo_suppress.note)
	ON CONFLICT ((lower(s.address))) DO NOTHING
	RETURNING true INTO added;
	RETURN coalesce(added, false);
END
$$;
COMMENT ON FUNCTION maileroo_suppress(text, text) IS
	'Suppress an address by hand; returns false when it was already suppressed';

-- Remove an address, whatever put it there; true when it was suppressed.
CREATE FUNCTION maileroo_unsuppress(address text)
RETURNS boolean
LANGUAGE sql VOLATILE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	WITH gone AS (
		DELETE FROM @extschema@.maileroo_suppressions s
		 WHERE lower(s.address) = lower(coalesce(@extschema@.maileroo_address_part(maileroo_unsuppress.address),
												 btrim(maileroo_unsuppress.address)))
		RETURNING 1)
	SELECT count(*) > 0 FROM gone
$$;
COMMENT ON FUNCTION maileroo_unsuppress(text) IS
	'Remove an address from the suppressions; returns false when it was not there';

CREATE FUNCTION maileroo_is_suppressed(address text)
RETURNS boolean
LANGUAGE sql STABLE STRICT SECURITY DEFINER PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT EXISTS (SELECT FROM @extschema@.maileroo_suppressions s
					WHERE lower(s.address) = lower(coalesce(@extschema@.maileroo_address_part(maileroo_is_suppressed.address),
															btrim(maileroo_is_suppressed.address))))
$$;
COMMENT ON FUNCTION maileroo_is_suppressed(text) IS
	'Whether an address is suppressed (compared case-insensitively)';

-- The addresses an event names: event_data.to (a string, an address object,
-- or an array of them; rejected events may list several), else the recipient
-- column.  When neither names anyone, the outbox request of the message is
-- used, but only if it had exactly one recipient: a complaint about a
-- message sent to several people must not suppress them all.
--
-- A statement-level trigger with a transition table: one INSERT per
-- statement whatever the number of events, so a batch ingest pays once and
-- the delivered/opened/clicked rows that make up most traffic pay only for
-- being captured.  It sits on the parent (inserts routed through it) and on
-- the three partitions concerned (inserts made into them directly).
CREATE FUNCTION maileroo_events_suppress()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO @extschema@.maileroo_suppressions AS s (address, reason, event_id, event_type)
	SELECT DISTINCT ON (lower(x.a)) x.a,
		   CASE n.event_type WHEN 'failed' THEN 'hard_bounce'
							 WHEN 'complained' THEN 'complaint'
							 ELSE 'rejection' END,
		   n.event_id, n.event_type
	  FROM new_events n
	 CROSS JOIN LATERAL (
		SELECT coalesce(
			(SELECT array_agg(a)
			   FROM (SELECT @extschema@.maileroo_address_part(
								CASE jsonb_typeof(v) WHEN 'string' THEN v #>> '{}'
													 WHEN 'object' THEN v ->> 'address' END) AS a
					   FROM jsonb_array_elements(
								CASE jsonb_typeof(n.event_data -> 'to')
									WHEN 'array' THEN n.event_data -> 'to'
									WHEN 'string' THEN jsonb_build_array(n.event_data -> 'to')
									WHEN 'object' THEN jsonb_build_array(n.event_data -> 'to')
									ELSE '[]'::jsonb END) AS e(v)) t
			  WHERE a IS NOT NULL),
			CASE WHEN n.recipient IS NOT NULL
				 THEN ARRAY[@extschema@.maileroo_address_part(n.recipient)] END,
			(SELECT r
			   FROM (SELECT @extschema@.maileroo_request_recipients(o.request) AS r
					   FROM @extschema@.maileroo_outbox o
					  WHERE o.reference_id = n.message_reference_id) o
			  WHERE cardinality(r) = 1)) AS addresses) ad
	 CROSS JOIN LATERAL unnest(ad.addresses) AS x(a)
	 WHERE ((n.event_type = 'failed' AND n.bounce_class = 'hard')
			OR n.event_type IN ('complained', 'rejected'))
	   AND x.a IS NOT NULL
	 ORDER BY lower(x.a), n.event_time, n.event_id
	ON CONFLICT ((lower(s.address))) DO NOTHING;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION maileroo_events_suppress() IS
	'Trigger: suppress the addresses of hard bounces, complaints and rejections';

-- A failed event suppresses only when its reply code says the failure is
-- permanent (bounce_class 'hard', a 5xx / 5.x.x code).  A failure without a
-- code (a timeout, a lookup error) is counted as failed but does not
-- suppress: suppression is silent and sticky, and mail to a valid customer
-- must not stop on a transient error.
CREATE TRIGGER maileroo_suppress
	AFTER INSERT ON maileroo_events
	REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION maileroo_events_suppress();
CREATE TRIGGER maileroo_suppress
	AFTER INSERT ON maileroo_events_failed
	REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION maileroo_events_suppress();
CREATE TRIGGER maileroo_suppress
	AFTER INSERT ON maileroo_events_complained
	REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION maileroo_events_suppress();
CREATE TRIGGER maileroo_suppress
	AFTER INSERT ON maileroo_events_rejected
	REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION maileroo_events_suppress();

-- ---------------------------------------------------------------------
-- Message status
-- ---------------------------------------------------------------------

-- One row per message: every outbox row, plus every reference id that only
-- events know.  sent_at is the outbox's (when Maileroo accepted our
-- request), or for mail sent elsewhere the time of its first accepted event;
-- both are computed before the join, so a filter on sent_at, queued_at,
-- status or reference_id narrows the rows before the events of each are
-- gathered.  A query for one reference_id reads the outbox by its primary
-- key and the events through maileroo_events_reference_idx.
CREATE VIEW maileroo_message_status AS
SELECT m.reference_id,
	   coalesce(@extschema@.maileroo_request_recipients(m.request), ev.recipients) AS recipients,
	   m.request ->> 'subject' AS subject,
	   coalesce((m.request -> 'tags')::jsonb, ev.tags) AS tags,
	   m.status,
	   m.created_at AS queued_at,
	   m.sent_at,
	   ev.delivered_at,
	   ev.first_opened_at,
	   ev.opens,
	   ev.clicks,
	   ev.deferrals,
	   ev.failed_at,
	   coalesce(ev.failure_reason, ev.rejection_reason) AS failure_reason,
	   ev.bounce_class,
	   ev.rejected_at,
	   ev.complained_at,
	   ev.last_event_type,
	   ev.last_event_at
  FROM (SELECT o.reference_id, o.request, o.status, o.created_at, o.sent_at
		  FROM maileroo_outbox o
		UNION ALL
		SELECT e.message_reference_id, NULL::json, NULL::text, NULL::timestamptz,
			   min(e.event_time) FILTER (WHERE e.event_type = 'accepted')
		  FROM maileroo_events e
		 WHERE e.message_reference_id IS NOT NULL
		   AND NOT EXISTS (SELECT FROM maileroo_outbox o
							WHERE o.reference_id = e.message_reference_id)
		 GROUP BY e.message_reference_id) AS m
 CROSS JOIN LATERAL (
		SELECT min(e.event_time) FILTER (WHERE e.event_type = 'delivered') AS delivered_at,
			   min(e.event_time) FILTER (WHERE e.event_type = 'opened') AS first_opened_at,
			   count(DISTINCT e.event_id) FILTER (WHERE e.event_type = 'opened') AS opens,
			   count(DISTINCT e.event_id) FILTER (WHERE e.event_type = 'clicked') AS clicks,
			   count(DISTINCT e.event_id) FILTER (WHERE e.event_type = 'deferred') AS deferrals,
			   min(e.event_time) FILTER (WHERE e.event_type = 'failed') AS failed_at,
			   (array_agg(e.reason ORDER BY e.event_time, e.event_id)
					FILTER (WHERE e.event_type = 'failed'))[1] AS failure_reason,
			   (array_agg(e.bounce_class ORDER BY e.event_time, e.event_id)
					FILTER (WHERE e.event_type = 'failed'))[1] AS bounce_class,
			   min(e.event_time) FILTER (WHERE e.event_type = 'rejected') AS rejected_at,
			   (array_agg(e.reason ORDER BY e.event_time, e.event_id)
					FILTER (WHERE e.event_type = 'rejected'))[1] AS rejection_reason,
			   min(e.event_time) FILTER (WHERE e.event_type = 'complained') AS complained_at,
			   (array_agg(e.event_type ORDER BY e.event_time DESC, e.event_id DESC))[1] AS last_event_type,
			   max(e.event_time) AS last_event_at,
			   array_agg(DISTINCT e.recipient) FILTER (WHERE e.recipient IS NOT NULL) AS recipients,
			   (array_agg(e.tags ORDER BY e.event_time, e.event_id)
					FILTER (WHERE e.tags IS NOT NULL))[1] AS tags
		  FROM maileroo_events e
		 WHERE e.message_reference_id = m.reference_id) AS ev;
COMMENT ON VIEW maileroo_message_status IS
	'One row per message: the outbox and the events joined on the reference id';

-- ---------------------------------------------------------------------
-- Daily and per-tag statistics
-- ---------------------------------------------------------------------

-- Counts are of distinct messages per day and kind (several opens of one
-- message on one day are one unique open), each on the day of its event in
-- the session's time zone.  A message is "sent" on its outbox sent_at, or,
-- for mail sent elsewhere (or whose outbox row does not know it was sent),
-- on the day of its accepted event.  Each branch is grouped by (day, kind)
-- with count(DISTINCT): that sorts small groups, and parallel workers can
-- share the scan; a filter on day reaches every branch.
CREATE VIEW maileroo_daily_stats AS
SELECT c.day, c.sent, c.delivered, c.unique_opens, c.unique_clicks, c.failed,
	   c.hard_bounces, c.soft_bounces, c.deferred, c.complained, c.rejected,
	   round(c.delivered::numeric / nullif(c.sent, 0), 4) AS delivery_rate,
	   round(c.unique_opens::numeric / nullif(c.delivered, 0), 4) AS open_rate,
	   round(c.unique_clicks::numeric / nullif(c.delivered, 0), 4) AS click_rate,
	   round(c.failed::numeric / nullif(c.sent, 0), 4) AS bounce_rate,
	   round(c.complained::numeric / nullif(c.delivered, 0), 4) AS complaint_rate
  FROM (SELECT k.day,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'sent'), 0)::bigint AS sent,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'delivered'), 0)::bigint AS delivered,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'opened'), 0)::bigint AS unique_opens,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'clicked'), 0)::bigint AS unique_clicks,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'failed'), 0)::bigint AS failed,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'hard'), 0)::bigint AS hard_bounces,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'soft'), 0)::bigint AS soft_bounces,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'deferred'), 0)::bigint AS deferred,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'complained'), 0)::bigint AS complained,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'rejected'), 0)::bigint AS rejected
		  FROM (SELECT o.sent_at::date AS day, 'sent'::text AS kind, count(*) AS n
				  FROM maileroo_outbox o
				 WHERE o.sent_at IS NOT NULL
				 GROUP BY 1
				UNION ALL
				SELECT e.event_time::date, 'sent',
					   count(DISTINCT coalesce(e.message_reference_id, e.message_id, e.event_id) COLLATE "C")
				  FROM maileroo_events e
				 WHERE e.event_type = 'accepted'
				   AND NOT EXISTS (SELECT FROM maileroo_outbox o
									WHERE o.reference_id = e.message_reference_id
									  AND o.sent_at IS NOT NULL)
				 GROUP BY 1
				UNION ALL
				SELECT e.event_time::date, e.event_type,
					   count(DISTINCT coalesce(e.message_reference_id, e.message_id, e.event_id) COLLATE "C")
				  FROM maileroo_events e
				 WHERE e.event_type IN ('delivered', 'opened', 'clicked', 'failed',
										'deferred', 'complained', 'rejected')
				 GROUP BY 1, 2
				UNION ALL
				SELECT e.event_time::date, e.bounce_class,
					   count(DISTINCT coalesce(e.message_reference_id, e.message_id, e.event_id) COLLATE "C")
				  FROM maileroo_events e
				 WHERE e.event_type = 'failed' AND e.bounce_class IN ('hard', 'soft')
				 GROUP BY 1, 2) AS k
		 GROUP BY k.day) AS c;
COMMENT ON VIEW maileroo_daily_stats IS
	'Per day (session time zone): messages sent, delivered, opened, clicked, failed, deferred, complained, rejected, and rates';

-- The same counts over [from_time, to_time), grouped by the value of one
-- tag (tags ->> tag_key); messages without that tag are left out.  Inlined
-- into the caller's query, so the events are found through the GIN index on
-- tags and the index on event_time.  A SET search_path clause would stop the
-- inlining; the body is written in SQL-standard form (BEGIN ATOMIC) instead,
-- parsed once when the extension is created, so that, as in a view, every
-- function, operator and aggregate in it is fixed then and nothing resolves
-- through the caller's search_path when it runs.
CREATE FUNCTION maileroo_stats_by_tag(tag_key text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (tag_value text, sent bigint, delivered bigint, unique_opens bigint,
			   unique_clicks bigint, failed bigint, hard_bounces bigint, soft_bounces bigint,
			   deferred bigint, complained bigint, rejected bigint,
			   delivery_rate numeric, open_rate numeric, click_rate numeric,
			   bounce_rate numeric, complaint_rate numeric)
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
SELECT c.tag_value, c.sent, c.delivered, c.unique_opens, c.unique_clicks, c.failed,
	   c.hard_bounces, c.soft_bounces, c.deferred, c.complained, c.rejected,
	   round(c.delivered::numeric / nullif(c.sent, 0), 4),
	   round(c.unique_opens::numeric / nullif(c.delivered, 0), 4),
	   round(c.unique_clicks::numeric / nullif(c.delivered, 0), 4),
	   round(c.failed::numeric / nullif(c.sent, 0), 4),
	   round(c.complained::numeric / nullif(c.delivered, 0), 4)
  FROM (SELECT k.tag_value,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'sent'), 0)::bigint AS sent,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'delivered'), 0)::bigint AS delivered,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'opened'), 0)::bigint AS unique_opens,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'clicked'), 0)::bigint AS unique_clicks,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'failed'), 0)::bigint AS failed,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'hard'), 0)::bigint AS hard_bounces,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'soft'), 0)::bigint AS soft_bounces,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'deferred'), 0)::bigint AS deferred,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'complained'), 0)::bigint AS complained,
			   coalesce(sum(k.n) FILTER (WHERE k.kind = 'rejected'), 0)::bigint AS rejected
		  FROM (SELECT o.request -> 'tags' ->> tag_key AS tag_value, 'sent'::text AS kind,
					   count(*) AS n
				  FROM @extschema@.maileroo_outbox o
				 WHERE o.sent_at >= from_time AND o.sent_at < to_time
				   AND o.request -> 'tags' ->> tag_key IS NOT NULL
				 GROUP BY 1
				UNION ALL
				SELECT e.tags ->> tag_key, 'sent',
					   count(DISTINCT coalesce(e.message_reference_id, e.message_id, e.event_id) COLLATE "C")
				  FROM @extschema@.maileroo_events e
				 WHERE e.tags ? tag_key
				   AND e.event_time >= from_time AND e.event_time < to_time
				   AND e.event_type = 'accepted'
				   AND NOT EXISTS (SELECT FROM @extschema@.maileroo_outbox o
									WHERE o.reference_id = e.message_reference_id
									  AND o.sent_at IS NOT NULL)
				 GROUP BY 1
				UNION ALL
				SELECT e.tags ->> tag_key, e.event_type,
					   count(DISTINCT coalesce(e.message_reference_id, e.message_id, e.event_id) COLLATE "C")
				  FROM @extschema@.maileroo_events e
				 WHERE e.tags ? tag_key
				   AND e.event_time >= from_time AND e.event_time < to_time
				   AND e.event_type IN ('delivered', 'opened', 'clicked', 'failed',
										'deferred', 'complained', 'rejected')
				 GROUP BY 1, 2
				UNION ALL
				SELECT e.tags ->> tag_key, e.bounce_class,
					   count(DISTINCT coalesce(e.message_reference_id, e.message_id, e.event_id) COLLATE "C")
				  FROM @extschema@.maileroo_events e
				 WHERE e.tags ? tag_key
				   AND e.event_time >= from_time AND e.event_time < to_time
				   AND e.event_type = 'failed' AND e.bounce_class IN ('hard', 'soft')
				 GROUP BY 1, 2) AS k
		 WHERE k.tag_value IS NOT NULL
		 GROUP BY k.tag_value) AS c;
END;
COMMENT ON FUNCTION maileroo_stats_by_tag(text, timestamptz, timestamptz) IS
	'Counts and rates of maileroo_daily_stats over a time range, grouped by the value of one tag';

-- ---------------------------------------------------------------------
-- Retention
-- ---------------------------------------------------------------------

-- A procedure, not a function, so that it can commit after every batch:
-- each DELETE holds its row locks for one batch only, and vacuum can reclaim
-- space while it runs.  Call it with CALL outside an explicit transaction
-- block.  Outbox rows still to be sent (queued, sending, retrying) are never
-- removed.
--
-- A procedure that commits cannot carry a SET search_path clause, so every
-- statement below resolves through the caller's search_path: each function,
-- aggregate, operator and type in it is written with its schema
-- (pg_catalog. or @extschema@.), so that nothing a caller's schema holds can
-- be picked instead.
CREATE PROCEDURE maileroo_purge(older_than interval, batch_size integer DEFAULT 10000,
								INOUT events_deleted bigint DEFAULT NULL,
								INOUT outbox_deleted bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
	cutoff pg_catalog.timestamptz;
	leaves pg_catalog.regclass[];
	leaf pg_catalog.regclass;
	n pg_catalog.int8;
BEGIN
	IF older_than IS NULL OR older_than OPERATOR(pg_catalog.<) '0'::pg_catalog.interval THEN
		RAISE EXCEPTION 'older_than must not be negative'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 THEN
		RAISE EXCEPTION 'batch_size must be at least 1'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	cutoff := pg_catalog.now() OPERATOR(pg_catalog.-) older_than;
	events_deleted := 0;
	outbox_deleted := 0;

	-- Leaf by leaf, so that batches are picked by ctid within one table
	-- (this also covers partitions a user adds below the type partitions).
	SELECT pg_catalog.array_agg(t.relid ORDER BY t.relid::pg_catalog.text) INTO leaves
	  FROM pg_catalog.pg_partition_tree('@extschema@.maileroo_events'::pg_catalog.regclass) t
	 WHERE t.isleaf;
	FOREACH leaf IN ARRAY leaves LOOP
		LOOP
			-- A regclass prints schema-qualified when the caller's path
			-- would find another table by that name first.
			EXECUTE pg_catalog.format(
				'DELETE FROM %s WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY('
				'SELECT ctid FROM %s WHERE event_time OPERATOR(pg_catalog.<) $1 LIMIT $2))',
				leaf, leaf)
				USING cutoff, batch_size;
			GET DIAGNOSTICS n = ROW_COUNT;
			COMMIT;
			events_deleted := events_deleted OPERATOR(pg_catalog.+) n;
			EXIT WHEN n OPERATOR(pg_catalog.=) 0;
		END LOOP;
	END LOOP;

	LOOP
		DELETE FROM @extschema@.maileroo_outbox
		 WHERE reference_id OPERATOR(pg_catalog.=) ANY (ARRAY(
				SELECT o.reference_id FROM @extschema@.maileroo_outbox o
				 WHERE o.status::pg_catalog.text OPERATOR(pg_catalog.=)
						ANY ('{sent,failed,cancelled,suppressed}'::pg_catalog.text[])
				   AND coalesce(o.sent_at, o.created_at) OPERATOR(pg_catalog.<) cutoff
				 LIMIT batch_size
				   FOR UPDATE SKIP LOCKED));
		GET DIAGNOSTICS n = ROW_COUNT;
		COMMIT;
		outbox_deleted := outbox_deleted OPERATOR(pg_catalog.+) n;
		EXIT WHEN n OPERATOR(pg_catalog.=) 0;
	END LOOP;
END
$$;
COMMENT ON PROCEDURE maileroo_purge(interval, integer, bigint, bigint) IS
	'Delete events, and outbox rows in a final state, older than an age, committing after each batch';

REVOKE ALL ON FUNCTION maileroo_suppress(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION maileroo_unsuppress(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION maileroo_is_suppressed(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION maileroo_events_suppress() FROM PUBLIC;
REVOKE ALL ON FUNCTION maileroo_stats_by_tag(text, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON PROCEDURE maileroo_purge(interval, integer, bigint, bigint) FROM PUBLIC;
