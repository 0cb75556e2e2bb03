-- maileroo_send_now and maileroo_send_template_now: the request each
-- combination of arguments produces, exactly as the mock Maileroo received it.
CREATE EXTENSION maileroo;
-- The sending account: the mock Maileroo server the test run started.
DO $$ BEGIN EXECUTE format('CREATE SERVER mock FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url %L)',
                           current_setting('maileroo_test.mock_url')); END $$;
CREATE USER MAPPING FOR PUBLIC SERVER mock OPTIONS (api_key 'test-key');
\! curl -s -o /dev/null -X POST "$MAILEROO_MOCK_URL/_mock/reset"

-- The smallest message: from and to objects, subject, one body.  The
-- reference_id returned is the one sent, generated (24 lowercase hex).
SELECT maileroo_send_now('shop@example.com', 'jane@example.org', 'Hello',
                         plain => 'Hi Jane') ~ '^[0-9a-f]{24}$' AS generated_id;
\! python3 test/send/show_requests.py 1 --mask-ref --headers

-- Every argument of maileroo_send_now at once.
SELECT maileroo_send_now(
  sender => 'Shop <shop@example.com>',
  recipients => 'Jane Doe <jane@example.org>, "Doe, John" <john@example.org>, <kim@example.net>',
  subject => 'Your order #42 — shipped',
  html => '<p>On its way!</p>',
  plain => E'On its way!\n',
  cc => 'boss@example.com',
  bcc => 'archive@example.com, audit@example.com',
  reply_to => 'Support <support@example.com>',
  tags => '{"campaign": "orders", "order": 42, "vip": true, "ratio": 1.50}',
  headers => '{"X-Order-Id": "42", "List-Unsubscribe": "<mailto:u@example.com>"}',
  attachments => ARRAY[maileroo_attachment('a.txt', 'hello'::bytea, 'text/plain'),
                       maileroo_attachment('logo.png', '\x89504e470d0a1a0a'::bytea, 'image/png', true)],
  tracking => false,
  reference_id => '0123456789ABCDEF01234567') AS reference_id;
\! python3 test/send/show_requests.py

-- tracking true; several reply_to addresses become an array; blank cc is
-- left out; an empty tags object is left out; html alone.
SELECT maileroo_send_now('shop@example.com', 'jane@example.org', 'Hi',
                         html => '<b>x</b>', cc => '  ', tags => '{}',
                         reply_to => 'a@example.com, B <b@example.com>',
                         tracking => true,
                         reference_id => 'aaaaaaaaaaaaaaaaaaaaaaaa');
\! python3 test/send/show_requests.py

-- Display names: quoted with escapes, non-ASCII, extra spaces trimmed.
SELECT maileroo_send_now(' "Zoë \"Z\" Ärger" <zoe@example.org> ',
                         E'  Ünïcødé Name   <u@example.org>\t, "" <v@example.org>',
                         'Grüße', plain => 'x',
                         reference_id => 'bbbbbbbbbbbbbbbbbbbbbbbb');
\! python3 test/send/show_requests.py

-- Attachment defaults: content_type application/octet-stream, inline
-- false; a composite built by hand with NULLs gets the same; binary content
-- is standard base64 without line breaks, however long.
SELECT maileroo_send_now('shop@example.com', 'jane@example.org', 'Files',
                         plain => 'x',
                         attachments => ARRAY[maileroo_attachment('bin', '\x00ff10'::bytea),
                                              ROW('raw.dat', '\xfbff'::bytea, NULL, NULL)::maileroo_attachment],
                         reference_id => 'cccccccccccccccccccccccc');
\! python3 test/send/show_requests.py
SELECT maileroo_send_now('shop@example.com', 'jane@example.org', 'Big file',
                         plain => 'x',
                         attachments => ARRAY[maileroo_attachment('big.bin', convert_to(repeat('0123456789', 200), 'UTF8'))],
                         reference_id => 'dddddddddddddddddddddddd') IS NOT NULL AS sent;
\! curl -s "$MAILEROO_MOCK_URL/_mock/requests?last=1" | python3 -c 'import json,sys,base64; b=json.load(sys.stdin)[0]["json"]["attachments"][0]["content"]; print(len(b), "\n" in b, base64.b64decode(b, validate=True) == b"0123456789"*200)'

-- scheduled_at goes out as RFC 3339 UTC, to the second.
SELECT to_char((now() + interval '2 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS expected,
       now() + interval '2 days' AS at \gset
\setenv EXPECT_SCHEDULED :expected
SET timezone = 'America/New_York';
SELECT maileroo_send_now('shop@example.com', 'jane@example.org', 'Later',
                         plain => 'x', scheduled_at => :'at',
                         reference_id => 'eeeeeeeeeeeeeeeeeeeeeeee');
RESET timezone;
\! python3 test/send/show_requests.py

-- Templates: template_id as a number, template_data as given.
SELECT maileroo_send_template_now('Shop <shop@example.com>', 'jane@example.org',
                                  'Welcome', 123,
                                  '{"name": "Jane", "items": [1, 2], "vip": null}',
                                  reference_id => 'ffffffffffffffffffffffff');
\! python3 test/send/show_requests.py
SELECT maileroo_send_template_now('shop@example.com', 'jane@example.org',
                                  'Welcome', 9007199254740993,
                                  tags => '{"t": "x"}', tracking => false,
                                  reference_id => 'abababababababababababab');
\! python3 test/send/show_requests.py

-- Maileroo's reference_id is returned: the mock echoes ours, this rule
-- answers another.
\! curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary '{"path": "/api/v2/emails", "status": 200, "json": {"success": true, "message": "ok", "data": {"reference_id": "fedcba9876543210fedcba98"}}}' "$MAILEROO_MOCK_URL/_mock/rules"
SELECT maileroo_send_now('shop@example.com', 'jane@example.org', 'Hi', plain => 'x');

-- Consecutive calls reuse one connection.
\! curl -s -o /dev/null -X DELETE "$MAILEROO_MOCK_URL/_mock/requests"
SELECT count(maileroo_send_now('shop@example.com', 'jane@example.org', 'Hi ' || i, plain => 'x')) AS sent
  FROM generate_series(1, 20) i;
\! curl -s "$MAILEROO_MOCK_URL/_mock/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("requests:", s["requests"], "connections:", s["connections"])'

DROP EXTENSION maileroo CASCADE;
