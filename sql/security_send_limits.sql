-- What a send refuses before anything is queued or sent: values that would
-- put a line break or another control character into a mail header, a
-- request larger than the limit, and a caller-chosen reference_id that was
-- used before (answered the same way whoever used it).
CREATE EXTENSION maileroo;
-- The sending account: the mock Maileroo server the test run started.
DO $$ BEGIN EXECUTE format('CREATE SERVER mock FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url %L)',
                           current_setting('maileroo_test.mock_url')); END $$;
CREATE USER MAPPING FOR PUBLIC SERVER mock OPTIONS (api_key 'test-key');
\set VERBOSITY default

-- Control characters wherever Maileroo puts the value into a header.
SELECT maileroo_send_now('shop@example.com', 'jane@example.org', E'Hi\r\nBcc: all@example.org', plain => 'x');
SELECT maileroo_send('shop@example.com', 'jane@example.org', E'Hi\nthere', plain => 'x');
SELECT maileroo_send('shop@example.com', 'jane@example.org', E'Hi\tthere', plain => 'x');
SELECT maileroo_send('shop@example.com', 'jane@example.org', E'Hi\x0bthere', plain => 'x');
SELECT maileroo_send('shop@example.com', 'jane@example.org', E'Hi\x0cthere', plain => 'x');
SELECT maileroo_send('shop@example.com', 'jane@example.org', E'Hi\x7fthere', plain => 'x');
SELECT maileroo_send('shop@example.com', 'jane@example.org', U&'Hi\0085there', plain => 'x');
SELECT maileroo_send('shop@example.com', 'jane@example.org', U&'Hi\2028there', plain => 'x');
SELECT maileroo_send('shop@example.com', 'jane@example.org', U&'Hi\2029there', plain => 'x');
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Hi', plain => 'x',
					 tags => jsonb_build_object('campaign', E'spring\r\nBcc: all@example.org'));
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Hi', plain => 'x',
					 tags => jsonb_build_object(E'camp\naign', 'spring'));
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Hi', plain => 'x',
					 headers => jsonb_build_object('X-Note', U&'one\2028two'));
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Hi', plain => 'x',
					 headers => jsonb_build_object('X-Note', U&'one\0085two'));
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Hi', plain => 'x',
					 headers => jsonb_build_object('X-Note', E'one\x0btwo'));
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Hi', plain => 'x',
					 headers => jsonb_build_object('X-Note', E'one\x0ctwo'));
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Hi', plain => 'x',
					 headers => jsonb_build_object(E'X-No\nte', 'one'));
SELECT maileroo_send(U&'Shop\2028Bcc: all@example.org <shop@example.com>', 'jane@example.org', 'Hi', plain => 'x');
SELECT maileroo_send('shop@example.com', U&'Jane\0085 <jane@example.org>', 'Hi', plain => 'x');
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Hi', plain => 'x',
					 reply_to => E'"Help\rdesk" <help@example.com>');
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Hi', plain => 'x',
					 attachments => ARRAY[maileroo_attachment(U&'a\2029b.txt', 'hi')]);
-- Printable text, including non-ASCII letters, passes.
BEGIN;
SELECT maileroo_send('Zoë Ünïcødé <shop@example.com>', 'jane@example.org', 'Grüße — “hi”', plain => 'x',
					 tags => '{"campaign": "été"}', headers => '{"X-Note": "ça va"}') IS NOT NULL AS queued;
ROLLBACK;

-- The size of a request: 30 MB at most, attachments counted as base64.
BEGIN;
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Big', html => repeat(repeat('x', 1024 * 1024), 31));
ROLLBACK;
BEGIN;
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Big', plain => 'see attached',
					 attachments => ARRAY[maileroo_attachment('a.bin', convert_to(repeat(repeat('a', 1024 * 1024), 12), 'UTF8')),
										  maileroo_attachment('b.bin', convert_to(repeat(repeat('b', 1024 * 1024), 12), 'UTF8'))]);
ROLLBACK;
SELECT maileroo_send_now('shop@example.com', 'jane@example.org', 'Big', plain => 'see attached',
						 attachments => ARRAY[maileroo_attachment('c.bin', convert_to(repeat(repeat('c', 1024 * 1024), 23), 'UTF8'))]);
-- 512 MiB, whose base64 length no longer fits an int, is refused the same way.
BEGIN;
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Huge', plain => 'see attached',
					 attachments => ARRAY[maileroo_attachment('huge.bin', convert_to(repeat(repeat('h', 1024 * 1024), 512), 'UTF8'))]);
ROLLBACK;
-- Just under the limit is queued.
BEGIN;
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Fits', plain => 'see attached',
					 attachments => ARRAY[maileroo_attachment('d.bin', convert_to(repeat(repeat('d', 1024 * 1024), 22), 'UTF8'))],
					 reference_id => 'f00000000000000000000001');
SELECT octet_length(request::text) BETWEEN 29 * 1024 * 1024 AND 30 * 1024 * 1024 AS near_the_limit
  FROM maileroo_outbox WHERE reference_id = 'f00000000000000000000001';
ROLLBACK;

-- A reference_id given by the caller that was used before: the same answer
-- whether the message is the caller's or another role's it cannot see.
CREATE ROLE regress_limits_a;
CREATE ROLE regress_limits_b;
GRANT EXECUTE ON FUNCTION maileroo_send(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text)
	TO regress_limits_a, regress_limits_b;
GRANT USAGE ON FOREIGN SERVER mock TO regress_limits_a, regress_limits_b;
GRANT SELECT ON maileroo_outbox TO regress_limits_a, regress_limits_b;
BEGIN;
SET LOCAL ROLE regress_limits_a;
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Mine', plain => 'x',
					 reference_id => 'f00000000000000000000002');
SAVEPOINT again;
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Mine again', plain => 'x',
					 reference_id => 'f00000000000000000000002');
ROLLBACK TO again;
RESET ROLE;
SET LOCAL ROLE regress_limits_b;
SELECT count(*) AS b_sees FROM maileroo_outbox WHERE reference_id = 'f00000000000000000000002';
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Yours?', plain => 'x',
					 reference_id => 'f00000000000000000000002');
ROLLBACK;

SET client_min_messages = warning;
DROP EXTENSION maileroo CASCADE;
RESET client_min_messages;
DROP ROLE regress_limits_a;
DROP ROLE regress_limits_b;
