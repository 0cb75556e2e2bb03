-- Analytics: maileroo_message_status, maileroo_daily_stats,
-- maileroo_stats_by_tag and maileroo_purge over small scenarios with known
-- answers.  Rows go straight into the tables, as the worker and
-- maileroo_ingest would write them.
CREATE EXTENSION maileroo;
-- The outbox rows written below as fixtures belong to one sending account.
ALTER TABLE maileroo_outbox ALTER account SET DEFAULT 'shop';
-- The sending account: the mock Maileroo server the test run started.
DO $$ BEGIN EXECUTE format('CREATE SERVER mock FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url %L)',
                           current_setting('maileroo_test.mock_url')); END $$;
CREATE USER MAPPING FOR PUBLIC SERVER mock OPTIONS (api_key 'test-key');
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

-- Messages we sent (outbox rows), on 2026-03-02 and 2026-03-03.  The one
-- still queued is due only in the far future, so that no delivery worker
-- sends it during the test.
INSERT INTO maileroo_outbox (reference_id, endpoint, request, status, attempts, next_attempt_at,
							 created_at, sent_at)
SELECT ref, '/emails',
	   json_build_object('from', json_build_object('address', 'shop@example.com'),
						 'to', json_build_array(json_build_object('address', rcpt, 'display_name', 'Customer')),
						 'subject', subject, 'plain', 'Hello', 'tags', tags::json,
						 'reference_id', ref),
	   status, 1, 'infinity', queued::timestamptz, sent::timestamptz
  FROM (VALUES
	('a00000000000000000000001', 'alice@example.org', 'Welcome, Alice', '{"campaign": "spring"}', 'sent', '2026-03-02 09:00:00', '2026-03-02 09:00:01'),
	('a00000000000000000000002', 'bob@example.org', 'Welcome, Bob', '{"campaign": "spring"}', 'sent', '2026-03-02 09:10:00', '2026-03-02 09:10:01'),
	('a00000000000000000000003', 'carol@example.org', 'Your invoice', '{"campaign": "billing"}', 'sent', '2026-03-02 09:20:00', '2026-03-02 09:20:01'),
	('a00000000000000000000004', 'dave@example.org', 'Your invoice', '{"campaign": "billing"}', 'sent', '2026-03-02 09:30:00', '2026-03-02 09:30:01'),
	('a00000000000000000000006', 'frank@example.org', 'Spring sale', '{"campaign": "spring"}', 'sent', '2026-03-03 08:00:00', '2026-03-03 08:00:01'),
	('a00000000000000000000007', 'grace@example.org', 'Spring sale', '{"campaign": "spring"}', 'sent', '2026-03-03 08:05:00', '2026-03-03 08:05:01'),
	('a00000000000000000000008', 'heidi@example.org', 'Not yet sent', '{"campaign": "spring"}', 'queued', '2026-03-03 09:00:00', NULL)
  ) AS v(ref, rcpt, subject, tags, status, queued, sent);

-- Events, deliberately out of order and with repeats (as Maileroo retries).
CREATE FUNCTION test_event(id text, type text, t text, ref text, rcpt text DEFAULT NULL,
						   reason text DEFAULT NULL, class text DEFAULT NULL,
						   tags jsonb DEFAULT NULL)
RETURNS SETOF text
LANGUAGE sql
AS $$
	INSERT INTO maileroo_events (event_id, event_type, event_time, message_reference_id,
								 recipient, reason, bounce_class, tags, event_data)
	VALUES (id, type, t::timestamptz, ref, rcpt, reason, class, tags, '{}')
	ON CONFLICT DO NOTHING
	RETURNING event_id || ' stored'
$$;

-- 1: delivered, opened twice, clicked once; the opens arrive first.
SELECT test_event('e1-open2', 'opened', '2026-03-02 11:00', 'a00000000000000000000001', tags => '{"campaign": "spring"}');
SELECT test_event('e1-open1', 'opened', '2026-03-02 10:00', 'a00000000000000000000001', tags => '{"campaign": "spring"}');
SELECT test_event('e1-click', 'clicked', '2026-03-02 10:01', 'a00000000000000000000001', tags => '{"campaign": "spring"}');
SELECT test_event('e1-deliv', 'delivered', '2026-03-02 09:00:05', 'a00000000000000000000001', 'alice@example.org', tags => '{"campaign": "spring"}');
SELECT test_event('e1-accept', 'accepted', '2026-03-02 09:00:02', 'a00000000000000000000001', tags => '{"campaign": "spring"}');
-- The same deliveries again: nothing new is stored.
SELECT test_event('e1-open2', 'opened', '2026-03-02 11:00', 'a00000000000000000000001', tags => '{"campaign": "spring"}');
SELECT test_event('e1-deliv', 'delivered', '2026-03-02 09:00:05', 'a00000000000000000000001', 'alice@example.org', tags => '{"campaign": "spring"}');
-- 2: deferred, then delivered (the delivery is reported first).
SELECT test_event('e2-deliv', 'delivered', '2026-03-02 09:40', 'a00000000000000000000002', 'bob@example.org', tags => '{"campaign": "spring"}');
SELECT test_event('e2-defer', 'deferred', '2026-03-02 09:10:05', 'a00000000000000000000002', 'bob@example.org',
				  '452 4.2.2 Mailbox full, try later', 'soft', '{"campaign": "spring"}');
-- 3: a hard bounce.
SELECT test_event('e3-fail', 'failed', '2026-03-02 09:20:03', 'a00000000000000000000003', 'carol@example.org',
				  '550 5.1.1 The email account does not exist', 'hard', '{"campaign": "billing"}');
-- 4: delivered, then a complaint that names no recipient.
SELECT test_event('e4-deliv', 'delivered', '2026-03-02 09:30:04', 'a00000000000000000000004', 'dave@example.org', tags => '{"campaign": "billing"}');
SELECT test_event('e4-compl', 'complained', '2026-03-03 07:00', 'a00000000000000000000004', tags => '{"campaign": "billing"}');
-- 5: mail sent elsewhere, known only from its events.
SELECT test_event('e5-accept', 'accepted', '2026-03-03 12:00', 'b00000000000000000000005', tags => '{"campaign": "spring"}');
SELECT test_event('e5-deliv', 'delivered', '2026-03-03 12:00:09', 'b00000000000000000000005', 'erin@example.net', tags => '{"campaign": "spring"}');
SELECT test_event('e5-open', 'opened', '2026-03-03 23:30', 'b00000000000000000000005', tags => '{"campaign": "spring"}');
-- 6: a soft bounce; 7: a failure without a reply code.
SELECT test_event('e6-fail', 'failed', '2026-03-03 08:00:05', 'a00000000000000000000006', 'frank@example.org',
				  '452 4.2.2 Mailbox full', 'soft', '{"campaign": "spring"}');
SELECT test_event('e7-fail', 'failed', '2026-03-03 08:05:05', 'a00000000000000000000007', 'grace@example.org',
				  'Connection timed out', NULL, '{"campaign": "spring"}');
-- 1 again: a second day of opens.
SELECT test_event('e1-open3', 'opened', '2026-03-03 09:00', 'a00000000000000000000001', tags => '{"campaign": "spring"}');

-- One row per message, whatever order the events came in.
SELECT reference_id, recipients, subject, status, queued_at, sent_at, delivered_at,
	   first_opened_at, opens, clicks, deferrals
  FROM maileroo_message_status ORDER BY reference_id;
SELECT reference_id, failed_at, failure_reason, bounce_class, complained_at,
	   last_event_type, last_event_at, tags
  FROM maileroo_message_status ORDER BY reference_id;

-- Filters on the message's own columns apply before its events are read.
SELECT reference_id, sent_at, last_event_type
  FROM maileroo_message_status WHERE sent_at >= '2026-03-03' ORDER BY sent_at;
SELECT reference_id, status FROM maileroo_message_status WHERE status = 'queued';

-- Per day.  Message 1 counts as a unique open on both days it was opened;
-- message 5 (sent elsewhere) counts as sent on the day of its accepted event.
SELECT day, sent, delivered, unique_opens, unique_clicks, failed, hard_bounces,
	   soft_bounces, deferred, complained, rejected
  FROM maileroo_daily_stats ORDER BY day;
-- Rates divide counts of the same day: on the 3rd, two messages were opened
-- (one sent the day before) and one delivered, so the open rate is 2.
SELECT day, delivery_rate, open_rate, click_rate, bounce_rate, complaint_rate
  FROM maileroo_daily_stats ORDER BY day;
-- Days follow the session's time zone: in Tokyo, 2026-03-03 23:30 UTC is
-- already the 4th.
SET TimeZone = 'Asia/Tokyo';
SELECT day, sent, delivered, unique_opens, failed, complained
  FROM maileroo_daily_stats ORDER BY day;
SET TimeZone = 'UTC';
-- A filter on day reaches the scans below the aggregation: every scan of
-- the outbox and of the event partitions carries it (the look-up of the
-- outbox by primary key aside).
SELECT day, sent, unique_opens FROM maileroo_daily_stats WHERE day = '2026-03-03';
CREATE FUNCTION test_plan_scans(query text, OUT scans integer, OUT filtered_by_day integer)
LANGUAGE plpgsql
AS $$
DECLARE
	line text;
	in_scan boolean := false;
BEGIN
	scans := 0;
	filtered_by_day := 0;
	FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
		IF line ~ 'Scan on maileroo_(events|outbox)' THEN
			scans := scans + 1;
			in_scan := true;
		ELSIF in_scan AND line ~ '::date = ''2026-03-03''::date' THEN
			filtered_by_day := filtered_by_day + 1;
			in_scan := false;
		END IF;
	END LOOP;
END
$$;
SELECT * FROM test_plan_scans($$SELECT * FROM maileroo_daily_stats WHERE day = '2026-03-03'$$);

-- By tag, over a time range; messages without the tag are left out.
SELECT tag_value, sent, delivered, unique_opens, unique_clicks, failed, hard_bounces,
	   soft_bounces, deferred, complained, delivery_rate, open_rate, bounce_rate
  FROM maileroo_stats_by_tag('campaign', '2026-03-01', '2026-04-01') ORDER BY tag_value;
SELECT tag_value, sent, delivered, unique_opens
  FROM maileroo_stats_by_tag('campaign', '2026-03-03', '2026-03-04') ORDER BY tag_value;
SELECT count(*) AS no_such_tag FROM maileroo_stats_by_tag('nope', '2026-03-01', '2026-04-01');

-- Plans are shown by their index lines only (the shape of the rest of a
-- plan differs between PostgreSQL versions).
CREATE FUNCTION test_plan_lines(query text)
RETURNS SETOF text
LANGUAGE plpgsql
AS $$
DECLARE
	line text;
BEGIN
	FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
		RETURN NEXT regexp_replace(btrim(regexp_replace(line, '^[ ->]*', '')),
								   'maileroo_events_[a-z]+_', 'maileroo_events_<type>_');
	END LOOP;
END
$$;
CREATE FUNCTION test_plan_indexes(query text)
RETURNS SETOF text
LANGUAGE sql
AS $$ SELECT l FROM test_plan_lines(query) l WHERE l ~ 'Index' $$;
-- Queries for one message use the index on the events' reference id, and
-- the outbox's primary key, and scan no table whole.
SET enable_seqscan = off;
SELECT DISTINCT regexp_replace(regexp_replace(l, ' on (maileroo_events|maileroo_outbox)\S* \S+$', ' on \1'),
							  '^Index Only', 'Index') AS table_scan
  FROM test_plan_lines($$SELECT * FROM maileroo_message_status WHERE reference_id = 'a00000000000000000000001'$$) AS l
 WHERE l ~ '(Seq|Index|Only|Bitmap Heap|Bitmap Index) Scan'
 ORDER BY 1;
-- A tag breakdown finds its events through the index on event_time (a
-- short range) or the GIN index on tags (a long one).
SELECT DISTINCT regexp_replace(l, ' on maileroo_events_[a-z]+ e.*', ' on maileroo_events_<type>') AS index_use
  FROM test_plan_indexes($$SELECT * FROM maileroo_stats_by_tag('campaign', '2026-03-03', '2026-03-04')$$) AS l
 ORDER BY 1;
RESET enable_seqscan;
-- With many events that lack the tag, the GIN index on tags finds the few
-- that carry it.
INSERT INTO maileroo_events (event_id, event_type, event_time, message_reference_id, tags, event_data)
SELECT 'noise-' || i, 'opened', '2025-01-01'::timestamptz + i * interval '1 hour', 'd' || i,
	   '{"newsletter": "weekly"}', '{}'
  FROM generate_series(1, 2000) AS i;
ANALYZE maileroo_events;
SELECT DISTINCT l AS index_use
  FROM test_plan_indexes($$SELECT * FROM maileroo_stats_by_tag('campaign', '-infinity', 'infinity')$$) AS l
 WHERE l ~ 'tags'
 ORDER BY 1;

-- A message to two recipients, delivered to and opened by both: one
-- message delivered and opened once in the counts, two opens in its status.
INSERT INTO maileroo_outbox (reference_id, endpoint, request, status, attempts, created_at, sent_at)
VALUES ('a00000000000000000000009', '/emails',
		'{"to": [{"address": "ann@example.org"}], "cc": [{"address": "ben@example.org"}], "subject": "Team news"}',
		'sent', 1, '2026-03-05 08:00', '2026-03-05 08:00:01');
SELECT test_event('e9-deliv-ann', 'delivered', '2026-03-05 08:00:05', 'a00000000000000000000009', 'ann@example.org');
SELECT test_event('e9-deliv-ben', 'delivered', '2026-03-05 08:00:04', 'a00000000000000000000009', 'ben@example.org');
SELECT test_event('e9-open-ann', 'opened', '2026-03-05 09:00', 'a00000000000000000000009');
SELECT test_event('e9-open-ben', 'opened', '2026-03-05 09:30', 'a00000000000000000000009');
SELECT reference_id, recipients, delivered_at, opens, last_event_type
  FROM maileroo_message_status WHERE reference_id = 'a00000000000000000000009';
SELECT day, sent, delivered, unique_opens, open_rate
  FROM maileroo_daily_stats WHERE day = '2026-03-05';

-- Retention: events and finished outbox rows older than the age go, in
-- batches; mail still to be sent stays, however old.
TRUNCATE maileroo_events, maileroo_outbox;
INSERT INTO maileroo_outbox (reference_id, endpoint, request, status, attempts, next_attempt_at,
							 created_at, sent_at)
SELECT 'c0000000000000000000000' || i, '/emails', '{"subject": "x"}', s, 1, 'infinity',
	   now() - age, CASE WHEN s = 'sent' THEN now() - age END
  FROM (VALUES (1, 'sent', interval '100 days'), (2, 'failed', interval '100 days'),
			   (3, 'queued', interval '100 days'), (4, 'retrying', interval '100 days'),
			   (5, 'sent', interval '1 day'), (6, 'cancelled', interval '100 days')) AS v(i, s, age);
INSERT INTO maileroo_events (event_id, event_type, event_time, message_reference_id, event_data)
SELECT 'old-' || i, t, now() - interval '100 days', 'c00000000000000000000001', '{}'
  FROM generate_series(1, 5) AS i, unnest(ARRAY['delivered', 'opened', 'something_new']) AS t;
INSERT INTO maileroo_events (event_id, event_type, event_time, message_reference_id, event_data)
SELECT 'new-' || i, 'opened', now() - interval '1 day', 'c00000000000000000000005', '{}'
  FROM generate_series(1, 3) AS i;
CALL maileroo_purge('90 days', batch_size => 2);
SELECT event_type, count(*) FROM maileroo_events GROUP BY 1 ORDER BY 1;
SELECT reference_id, status FROM maileroo_outbox ORDER BY 1;
CALL maileroo_purge('90 days');
-- It commits between batches, so it cannot run inside a transaction block.
BEGIN;
CALL maileroo_purge('90 days');
ROLLBACK;
CALL maileroo_purge('-1 day');
CALL maileroo_purge('1 day', 0);

DROP FUNCTION test_event(text, text, text, text, text, text, text, jsonb);
DROP FUNCTION test_plan_indexes(text);
DROP FUNCTION test_plan_scans(text);
DROP EXTENSION maileroo CASCADE;
