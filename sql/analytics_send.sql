-- Suppressions feed back into sending: a hard bounce or a complaint
-- suppresses the address as its event is stored, and the next send leaves
-- it out.
CREATE EXTENSION maileroo;
-- The sending account: the mock Maileroo server the test run started.
DO $$ BEGIN EXECUTE format('CREATE SERVER mock FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url %L)',
                           current_setting('maileroo_test.mock_url')); END $$;
CREATE USER MAPPING FOR PUBLIC SERVER mock OPTIONS (api_key 'test-key');
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
\! curl -s -o /dev/null -X POST "$MAILEROO_MOCK_URL/_mock/reset"

-- A hard bounce and a complaint arrive through maileroo_ingest and
-- suppress; a soft bounce does not.
SELECT maileroo_ingest('[
  {"event_id": "b1", "event_type": "failed", "event_time": 1772442000,
   "message_reference_id": "a00000000000000000000001",
   "event_data": {"to": "Gone@Example.org", "reason": "550 5.1.1 <Gone@Example.org>: Recipient address rejected: User unknown"}},
  {"event_id": "b2", "event_type": "failed", "event_time": 1772442000,
   "message_reference_id": "a00000000000000000000002",
   "event_data": {"to": "full@example.org", "reason": "452 4.2.2 Mailbox full"}},
  {"event_id": "c1", "event_type": "complained", "event_time": 1772445600,
   "message_reference_id": "a00000000000000000000003",
   "event_data": {"to": "angry@example.org"}}]') AS new_events;
SELECT event_id, event_type, recipient, bounce_class FROM maileroo_events ORDER BY event_id;
SELECT address, reason, event_id, event_type FROM maileroo_suppressions ORDER BY address;

-- A synchronous send leaves the suppressed recipients out, says so, and
-- sends to the rest: the request Maileroo received lacks them.
SELECT maileroo_send_now('shop@example.com', 'Jane <jane@example.org>, gone@example.ORG',
						 'Hello', plain => 'Hi', bcc => 'angry@example.org, full@example.org',
						 reference_id => 'e00000000000000000000001') AS sent;
\! python3 test/send/show_requests.py 1
-- ignore_suppressions => true sends to everyone.
SELECT maileroo_send_now('shop@example.com', 'Jane <jane@example.org>, gone@example.org',
						 'Hello', plain => 'Hi', ignore_suppressions => true,
						 reference_id => 'e00000000000000000000002') AS sent;
\! python3 test/send/show_requests.py 1
-- When every recipient is suppressed, nothing is sent.
\set VERBOSITY sqlstate
SELECT maileroo_send_now('shop@example.com', 'gone@example.org', 'Hello', plain => 'Hi');
\set VERBOSITY default
SELECT maileroo_send_now('shop@example.com', 'gone@example.org', 'Hello', plain => 'Hi');
\! curl -s "$MAILEROO_MOCK_URL/_mock/stats" | python3 -c 'import json,sys; print("requests received:", json.load(sys.stdin)["requests"])'

-- Queued sends: the outbox keeps only the recipients left, and a message
-- whose every recipient is suppressed is recorded as suppressed, never sent.
SELECT maileroo_send('shop@example.com', 'gone@example.org, jane@example.org', 'Queued',
					 plain => 'Hi', reference_id => 'e00000000000000000000003') AS queued;
SELECT maileroo_send('shop@example.com', 'GONE@example.org', 'Queued', plain => 'Hi',
					 reference_id => 'e00000000000000000000004') AS queued;
-- The delivery worker sends the first one; the request it sent lacks the
-- suppressed address.
DO $$
BEGIN
	FOR i IN 1..600 LOOP
		EXIT WHEN (SELECT status FROM maileroo_outbox
					WHERE reference_id = 'e00000000000000000000003') = 'sent';
		PERFORM pg_sleep(0.05);
	END LOOP;
END
$$;
\! python3 test/send/show_requests.py 1
SELECT reference_id, status, recipients, sent_at IS NOT NULL AS has_sent_at
  FROM maileroo_message_status
 WHERE reference_id IN ('e00000000000000000000003', 'e00000000000000000000004')
 ORDER BY 1;
SELECT sent AS sent_today FROM maileroo_daily_stats WHERE day = current_date;

-- Removing the address lets mail through again.
SELECT maileroo_unsuppress('gone@example.org') AS removed;
SELECT maileroo_send_now('shop@example.com', 'gone@example.org', 'Welcome back', plain => 'Hi',
						 reference_id => 'e00000000000000000000005') AS sent;
\! python3 test/send/show_requests.py 1

DROP EXTENSION maileroo CASCADE;
