-- maileroo_scheduled lists mail scheduled at Maileroo; maileroo_cancel_scheduled
-- cancels it.  Also: suppressed recipients are left out of synchronous sends.
CREATE EXTENSION maileroo;
-- The sending account: the mock Maileroo server the test run started.
DO $$ BEGIN EXECUTE format('CREATE SERVER mock FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url %L)',
                           current_setting('maileroo_test.mock_url')); END $$;
CREATE USER MAPPING FOR PUBLIC SERVER mock OPTIONS (api_key 'test-key');
\! curl -s -o /dev/null -X POST "$MAILEROO_MOCK_URL/_mock/reset"

-- Three scheduled messages, from two domains.
SELECT maileroo_send_now('Shop <shop@example.com>', 'Jane <jane@example.org>, kim@example.net',
                         'First', plain => 'x', cc => 'cc@example.org',
                         tags => '{"kind": "reminder"}', headers => '{"X-Seq": "1"}',
                         scheduled_at => date_trunc('second', now()) + interval '1 day',
                         reference_id => 'aaaaaaaaaaaaaaaaaaaaaaa1');
SELECT maileroo_send_now('shop@example.com', 'bob@example.org', 'Second', plain => 'x',
                         scheduled_at => date_trunc('second', now()) + interval '2 days',
                         reference_id => 'aaaaaaaaaaaaaaaaaaaaaaa2');
SELECT maileroo_send_template_now('news@other.example', 'ann@example.org', 'Third', 7,
                         scheduled_at => date_trunc('second', now()) + interval '3 days',
                         reference_id => 'aaaaaaaaaaaaaaaaaaaaaaa3');
-- One not scheduled: not listed.
SELECT maileroo_send_now('shop@example.com', 'bob@example.org', 'Now', plain => 'x',
                         reference_id => 'aaaaaaaaaaaaaaaaaaaaaaa4');

SELECT reference_id, sender, recipients, subject,
       justify_hours(date_trunc('hour', scheduled_at - now() + interval '30 minutes')) AS in_,
       tags, headers
  FROM maileroo_scheduled() ORDER BY scheduled_at;
-- Paging, and the domain filter (sent as a query parameter).
SELECT reference_id FROM maileroo_scheduled(page => 2, per_page => 2);
SELECT reference_id FROM maileroo_scheduled(domain => 'other.example');
\! python3 test/send/show_requests.py 1
SELECT count(*) FROM maileroo_scheduled(page => 3, per_page => 100);
-- Bad paging is refused before asking.
SELECT * FROM maileroo_scheduled(page => 0);
SELECT * FROM maileroo_scheduled(per_page => 101);
SELECT * FROM maileroo_scheduled(per_page => 0);

-- Cancel: true once, then false (Maileroo answers 404).
SELECT maileroo_cancel_scheduled('AAAAAAAAAAAAAAAAAAAAAAA2');
\! python3 test/send/show_requests.py 1
SELECT maileroo_cancel_scheduled('aaaaaaaaaaaaaaaaaaaaaaa2');
SELECT reference_id FROM maileroo_scheduled() ORDER BY scheduled_at;
SELECT maileroo_cancel_scheduled('nope');
SELECT maileroo_cancel_scheduled(NULL) IS NULL AS strict;
-- Other failures raise.
\! curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary '[{"path": "/api/v2/emails/scheduled*", "method": "DELETE", "status": 500}, {"path": "/api/v2/emails/scheduled", "method": "GET", "status": 401}]' "$MAILEROO_MOCK_URL/_mock/rules"
SELECT maileroo_cancel_scheduled('aaaaaaaaaaaaaaaaaaaaaaa1');
SELECT * FROM maileroo_scheduled();

-- A list in another shape is read tolerantly: from as an object, recipients
-- as one string, an unparsable time, missing fields, a non-object entry.
\! curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary '{"path": "/api/v2/emails/scheduled", "method": "GET", "status": 200, "json": {"success": true, "message": "ok", "data": {"results": [{"reference_id": "bbbbbbbbbbbbbbbbbbbbbbbb", "from": {"address": "a@example.com", "display_name": "A"}, "recipients": "x@example.org", "subject": "S", "scheduled_at": "2030-01-02 03:04:05+02:00", "tags": null}, {"reference_id": "cccccccccccccccccccccccc", "to": [{"address": "y@example.org"}, "Z <z@example.org>"], "scheduled_at": "soon"}, 42]}}}' "$MAILEROO_MOCK_URL/_mock/rules"
SET timezone = 'UTC';
SELECT * FROM maileroo_scheduled();
RESET timezone;
-- No data at all is an empty list.
\! curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary '{"path": "/api/v2/emails/scheduled", "method": "GET", "status": 200, "json": {"success": true, "message": "ok"}}' "$MAILEROO_MOCK_URL/_mock/rules"
SELECT count(*) FROM maileroo_scheduled();

-- Suppressions: when the extension's schema has a maileroo_suppressions
-- table, its addresses are left out (case-insensitively), with a NOTICE.
DO $$ BEGIN
  IF to_regclass('maileroo_suppressions') IS NULL THEN
    CREATE TABLE maileroo_suppressions (address text NOT NULL, reason text);
  END IF;
END $$;
INSERT INTO maileroo_suppressions (address, reason) VALUES ('Gone@Example.org', 'manual'), ('cc@example.org', 'manual');
SELECT maileroo_send_now('shop@example.com', 'gone@example.ORG, Jane <jane@example.org>', 'S',
                         plain => 'x', cc => 'cc@example.org', reference_id => 'dddddddddddddddddddddddd');
\! python3 test/send/show_requests.py 1
-- ignore_suppressions sends to everyone.
SELECT maileroo_send_now('shop@example.com', 'gone@example.org', 'S', plain => 'x',
                         ignore_suppressions => true, reference_id => 'dddddddddddddddddddddddd');
\! python3 test/send/show_requests.py 1
-- When every recipient is suppressed, nothing is sent.
SELECT maileroo_send_now('shop@example.com', 'gone@example.org', 'S', plain => 'x', cc => 'CC@example.org');
SELECT maileroo_send_template_now('shop@example.com', 'gone@example.org', 'S', 1);
DELETE FROM maileroo_suppressions WHERE address IN ('Gone@Example.org', 'cc@example.org');
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_depend WHERE classid = 'pg_class'::regclass
                    AND objid = 'maileroo_suppressions'::regclass AND deptype = 'e') THEN
    DROP TABLE maileroo_suppressions;
  END IF;
END $$;

\! curl -s -o /dev/null -X DELETE "$MAILEROO_MOCK_URL/_mock/rules"
DROP EXTENSION maileroo CASCADE;
