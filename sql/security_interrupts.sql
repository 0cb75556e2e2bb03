-- Input whose size the caller chooses costs time in proportion to it, and
-- a statement_timeout (or a cancel) stops the work inside the loop that
-- reads it, not after it.
CREATE EXTENSION maileroo;
-- The sending account: the mock Maileroo server the test run started.
DO $$ BEGIN EXECUTE format('CREATE SERVER mock FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url %L)',
                           current_setting('maileroo_test.mock_url')); END $$;
CREATE USER MAPPING FOR PUBLIC SERVER mock OPTIONS (api_key 'test-key');
\set VERBOSITY default

-- 80,000 distinct unknown top-level keys, some of them repeated (the last
-- value wins, as in jsonb), and a known key whose first value could not be
-- typed (kept in extra) and whose second could (so it leaves extra).
CREATE TEMP TABLE bodies AS
SELECT '{"event_id": "e1", "event_type": "delivered", "event_time": 1700000000,'
	   || ' "domain_id": "not a number",'
	   || string_agg(format('"k%s": %s', g, g), ', ')
	   || ', "k1": "last", "k80000": "last too", "domain_id": 7}' AS body
  FROM generate_series(1, 80000) g;
SET statement_timeout = '10s';
SELECT (SELECT count(*) FROM jsonb_object_keys(e.extra)) AS extra_keys,
	   e.extra -> 'k1' AS k1, e.extra -> 'k2' AS k2, e.extra -> 'k80000' AS k80000,
	   e.extra ? 'domain_id' AS domain_id_in_extra, e.domain_id
  FROM bodies b, maileroo_parse_event(b.body) e;
-- The same as jsonb reads it.
SELECT e.extra = (b.body::jsonb - ARRAY['event_id', 'event_type', 'event_time', 'domain_id'])
	   AS extra_as_jsonb_reads_it
  FROM bodies b, maileroo_parse_event(b.body) e;
RESET statement_timeout;

-- A body of 10 MB whose parsing takes longer than the timeout: the cancel
-- arrives while the parser is reading it (its error context says where).
CREATE TEMP TABLE big AS
SELECT '{"event_id": "e2", "event_type": "delivered", "event_time": 1700000000,'
	   || ' "event_data": {"a": [' || string_agg('[1, 2, {"x": "y"}]', ', ') || ']}}' AS body
  FROM generate_series(1, 600000) g;
SELECT octet_length(body) > 10000000 AS over_10_mb FROM big;
SET statement_timeout = '500ms';
SELECT (maileroo_parse_event(body)).event_id FROM big;
\set VERBOSITY terse
SELECT count(*) FROM big, maileroo_parse_events('[' || body || ',' || body || ']');
SELECT count(*) FROM big, maileroo_event_bodies('[' || repeat(body || ',', 3) || body || ']');
\set VERBOSITY default
RESET statement_timeout;

-- A queued send to 80,000 recipients, all but one suppressed: the filter
-- looks each one up once.
CREATE TEMP TABLE rcpt AS
SELECT string_agg(format('user%s@example.org', g), ', ') AS list
  FROM generate_series(1, 80000) g;
INSERT INTO maileroo_suppressions (address, reason)
SELECT format('user%s@example.org', g), 'manual' FROM generate_series(2, 80000) g;
BEGIN;
SET LOCAL client_min_messages = warning;
SET LOCAL statement_timeout = '20s';
SELECT maileroo_send('shop@example.com', r.list, 'Hello', plain => 'Hi',
					 reference_id => 'd00000000000000000000001') AS queued
  FROM rcpt r;
SELECT status, request -> 'to' AS recipients_left
  FROM maileroo_outbox WHERE reference_id = 'd00000000000000000000001';
ROLLBACK;

SET client_min_messages = warning;
DROP EXTENSION maileroo CASCADE;
RESET client_min_messages;
