-- search_path: a role that may create schemas plants, in a schema named
-- like the superuser ("$user" comes first in the default search_path),
-- functions, aggregates and operators more specific than pg_catalog's.
-- Then the superuser uses the whole SQL surface of the extension: none of
-- the planted objects may run.  Each one raises when a superuser runs it.
CREATE EXTENSION maileroo;
-- The sending account: the mock Maileroo server the test run started.
DO $$ BEGIN EXECUTE format('CREATE SERVER mock FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url %L)',
                           current_setting('maileroo_test.mock_url')); END $$;
CREATE USER MAPPING FOR PUBLIC SERVER mock OPTIONS (api_key 'test-key');
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

-- No delivery worker serves this database yet: maileroo_send then looks
-- for one without the help of shared memory.
DO $$
BEGIN
	PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
	 WHERE backend_type = 'maileroo delivery worker' AND datname = current_database();
	FOR i IN 1..300 LOOP
		EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity
							   WHERE backend_type = 'maileroo delivery worker'
								 AND datname = current_database());
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;

-- Every SQL and PL/pgSQL routine pins search_path or has a body parsed at
-- creation (BEGIN ATOMIC / RETURN); the one exception, maileroo_purge, is a
-- procedure that commits (and so cannot carry SET) and qualifies every name.
SELECT p.oid::regprocedure AS unpinned
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension x ON x.oid = d.refobjid AND x.extname = 'maileroo'
  JOIN pg_language l ON l.oid = p.prolang
 WHERE l.lanname <> 'c' AND p.prosqlbody IS NULL
   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
 ORDER BY 1::text;

CREATE ROLE regress_planter;
GRANT CREATE ON DATABASE contrib_regression TO regress_planter;
SET ROLE regress_planter;
DO $$
BEGIN
	EXECUTE format('CREATE SCHEMA %I', session_user);
END
$$;
SELECT set_config('search_path', quote_ident(session_user) || ', public', false) IS NOT NULL AS planting;
CREATE TABLE planted_calls (what text, by_role name);
GRANT INSERT ON planted_calls TO PUBLIC;
-- Records who ran it; raises when that is a superuser.
CREATE FUNCTION planted_ran(what text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
	s text := format('%I', (SELECT n.nspname FROM pg_namespace n
							 WHERE n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = 'regress_planter')));
BEGIN
	IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
		RAISE EXCEPTION 'planted % ran as a superuser', what;
	END IF;
	EXECUTE format('INSERT INTO %s.planted_calls VALUES ($1, current_user)', s) USING what;
END
$f$;
CREATE FUNCTION unnest(a text[]) RETURNS SETOF text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
	EXECUTE format('SELECT %s.planted_ran(''unnest(text[])'')', (SELECT quote_ident(n.nspname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = 'planted_ran'));
	RETURN QUERY SELECT pg_catalog.unnest(a);
END
$f$;
CREATE FUNCTION planted_agg_step(s regclass[], v regclass) RETURNS regclass[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
	EXECUTE format('SELECT %s.planted_ran(''array_agg(regclass)'')', (SELECT quote_ident(n.nspname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = 'planted_ran'));
	RETURN s || v;
END
$f$;
CREATE AGGREGATE array_agg(regclass) (sfunc = planted_agg_step, stype = regclass[]);
CREATE FUNCTION planted_count_step(s bigint, v text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
	EXECUTE format('SELECT %s.planted_ran(''count(text)'')', (SELECT quote_ident(n.nspname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = 'planted_ran'));
	RETURN s + 1;
END
$f$;
CREATE AGGREGATE count(text) (sfunc = planted_count_step, stype = bigint, initcond = '0');
CREATE FUNCTION planted_oid_int_eq(a oid, b integer) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
	EXECUTE format('SELECT %s.planted_ran(''=(oid, integer)'')', (SELECT quote_ident(n.nspname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = 'planted_ran'));
	RETURN a = b::oid;
END
$f$;
CREATE OPERATOR = (leftarg = oid, rightarg = integer, function = planted_oid_int_eq);
CREATE FUNCTION planted_status_eq(a public.maileroo_outbox_status, b public.maileroo_outbox_status)
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
	EXECUTE format('SELECT %s.planted_ran(''=(maileroo_outbox_status, maileroo_outbox_status)'')', (SELECT quote_ident(n.nspname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = 'planted_ran'));
	RETURN a::text = b::text;
END
$f$;
CREATE OPERATOR = (leftarg = public.maileroo_outbox_status, rightarg = public.maileroo_outbox_status,
				   function = planted_status_eq);

-- The planted objects are live: the planter's own queries pick them.
SELECT unnest(ARRAY['a']);
SELECT cardinality(array_agg(c)) FROM (VALUES ('pg_class'::regclass)) v(c);
SELECT count(x) FROM (VALUES ('a'::text)) v(x);
SELECT 1::oid = 1 AS planted_eq;
SELECT 'sent'::public.maileroo_outbox_status = 'sent' AS planted_status_eq;
SELECT what, by_role FROM planted_calls ORDER BY what;
RESET ROLE;

-- From here on the superuser, with the default search_path.
SET search_path = "$user", public;
SELECT current_schemas(false) = ARRAY[session_user::name, 'public'::name] AS planted_schema_first;

-- Queue mail (the worker is looked for at once and woken at commit).
SELECT maileroo_send('shop@example.com', 'Jane <jane@example.org>, bob@example.org', 'Hello',
					 plain => 'Hi', cc => 'carol@example.org', tags => '{"campaign": "spring"}',
					 reference_id => 'c00000000000000000000001');
BEGIN;
SELECT maileroo_send_template('shop@example.com', 'dave@example.org', 'Welcome', 7,
							  reference_id => 'c00000000000000000000002',
							  scheduled_at => now() + interval '1 day');
SELECT maileroo_cancel('c00000000000000000000002');
COMMIT;
BEGIN;
SELECT maileroo_send('shop@example.com', 'erin@example.org', 'Rolled back', plain => 'Hi') IS NOT NULL AS queued;
ROLLBACK;
SELECT maileroo_send_now('shop@example.com', 'frank@example.org', 'Now', plain => 'Hi',
						 reference_id => 'c00000000000000000000003');
SELECT count(*) >= 0 AS listed FROM maileroo_scheduled();

-- Sent mail and its events, stored through both ingest paths.
INSERT INTO maileroo_outbox (reference_id, account, endpoint, request, status, attempts, next_attempt_at,
							 created_at, sent_at)
VALUES ('c00000000000000000000004', 'mock', '/emails',
		'{"from": {"address": "shop@example.com"}, "to": [{"address": "gina@example.org"}], "cc": "hal@example.org", "subject": "Old", "plain": "Hi", "tags": {"campaign": "spring"}}',
		'sent', 1, 'infinity', now() - interval '200 days', now() - interval '200 days');
SELECT maileroo_ingest('[
 {"event_id": "s1", "event_type": "delivered", "event_time": ' || extract(epoch FROM now())::bigint || ',
  "message_reference_id": "c00000000000000000000001", "tags": {"campaign": "spring"},
  "event_data": {"to": "jane@example.org"}},
 {"event_id": "s2", "event_type": "opened", "event_time": ' || extract(epoch FROM now())::bigint || ',
  "message_reference_id": "c00000000000000000000001", "tags": {"campaign": "spring"},
  "event_data": {"ip": "192.0.2.1"}},
 {"event_id": "s3", "event_type": "failed", "event_time": ' || extract(epoch FROM now())::bigint || ',
  "message_reference_id": "c00000000000000000000001", "tags": {"campaign": "spring"},
  "event_data": {"to": "bob@example.org", "reason": "550 5.1.1 no such user"}},
 {"event_id": "s4", "event_type": "complained", "event_time": ' || extract(epoch FROM now())::bigint || ',
  "message_reference_id": "c00000000000000000000009", "event_data": {}},
 {"event_id": "s5", "event_type": "accepted", "event_time": 1700000000,
  "message_reference_id": "c00000000000000000000004", "tags": {"campaign": "spring"},
  "event_data": {}}
]') AS stored;
INSERT INTO maileroo_events
SELECT e.* FROM maileroo_parse_events('{"events": [{"event_id": "s6", "event_type": "rejected",
  "event_time": 1700000100, "message_reference_id": "c00000000000000000000004",
  "tags": {"campaign": "autumn"}, "event_data": {"to": ["gina@example.org", "hal@example.org"], "reject_reason": "spam"}}]}') e
ON CONFLICT DO NOTHING;
SELECT address, reason FROM maileroo_suppressions ORDER BY address;

-- Suppressions by hand.
SELECT maileroo_suppress('Ivan <ivan@example.org>', 'asked');
SELECT maileroo_is_suppressed('IVAN@example.org');
SELECT maileroo_unsuppress('ivan@example.org');

-- The views and the statistics.
SELECT reference_id, recipients, status IS NOT NULL AS in_outbox, opens, failure_reason, last_event_type
  FROM maileroo_message_status ORDER BY reference_id;
SELECT day = current_date AS today, delivered, unique_opens, failed, hard_bounces, complained
  FROM maileroo_daily_stats WHERE day >= current_date - 1 ORDER BY day;
SELECT tag_value, delivered, unique_opens, failed, hard_bounces
  FROM maileroo_stats_by_tag('campaign', now() - interval '1 day', now() + interval '1 day');
SELECT tag_value, sent, rejected FROM maileroo_stats_by_tag('campaign', '2023-01-01', '2024-01-01');
SELECT maileroo_request_recipients(request) FROM maileroo_outbox
 WHERE reference_id = 'c00000000000000000000004';
SELECT maileroo_address_part('Jane <jane@example.org>');
SELECT (maileroo_attachment('a.txt', 'hi')).file_name;
SELECT length(maileroo_reference_id());
SELECT event_type, recipient FROM maileroo_parse_event('{"event_id": "x", "event_type": "delivered", "event_time": 1, "event_data": {"to": "a@example.org"}}');
SELECT count(*) FROM maileroo_event_bodies('[{"a": 1}, {"b": 2}]');
SELECT maileroo_verify_signature('body', 'sha256=00', 'k');

-- The worker's status (it has been woken, or started, at commit).
SELECT database = current_database() AS this_database, queued + sending + sent + retrying + failed >= 1 AS counted,
	   cancelled
  FROM maileroo_worker_status();

-- Retention.
CALL maileroo_purge('90 days');
SELECT reference_id FROM maileroo_outbox WHERE reference_id = 'c00000000000000000000004';

-- None of the planted objects ran outside the planter's own queries.
SELECT what, by_role FROM planted_calls ORDER BY what;

SET client_min_messages = warning;
DO $$
BEGIN
	EXECUTE format('DROP SCHEMA %I CASCADE', session_user);
END
$$;
RESET search_path;
DROP EXTENSION maileroo CASCADE;
RESET client_min_messages;
REVOKE CREATE ON DATABASE contrib_regression FROM regress_planter;
DROP ROLE regress_planter;
