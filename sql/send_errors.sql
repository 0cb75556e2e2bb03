-- Every invalid argument is an ERROR naming it, raised before anything is
-- sent; every way Maileroo can fail maps to an ERROR with its own SQLSTATE.
CREATE EXTENSION maileroo;
-- The sending account: the mock Maileroo server the test run started.
DO $$ BEGIN EXECUTE format('CREATE SERVER mock FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url %L)',
                           current_setting('maileroo_test.mock_url')); END $$;
CREATE USER MAPPING FOR PUBLIC SERVER mock OPTIONS (api_key 'test-key');
\! curl -s -o /dev/null -X POST "$MAILEROO_MOCK_URL/_mock/reset"
-- try(q): the SQLSTATE, message, detail and hint of q's error.
CREATE FUNCTION try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text; hnt text;
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                          det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
  RETURN st || ': ' || msg || coalesce(E'\n  DETAIL: ' || nullif(det, ''), '')
         || coalesce(E'\n  HINT: ' || nullif(hnt, ''), '');
END $$;
-- s(args): a maileroo_send_now call with a valid message and args added.
CREATE FUNCTION s(args text) RETURNS text LANGUAGE sql AS $$
  SELECT try(format('SELECT maileroo_send_now(%s)', args)) $$;

-- Addresses.
SELECT label, s(args) FROM (VALUES
  ('sender NULL',          $$NULL, 'j@example.org', 'S', 'x'$$),
  ('sender empty',         $$'  ', 'j@example.org', 'S', 'x'$$),
  ('sender two',           $$'a@example.com, b@example.com', 'j@example.org', 'S', 'x'$$),
  ('no @',                 $$'shop', 'j@example.org', 'S', 'x'$$),
  ('two @',                $$'a@b@example.com', 'j@example.org', 'S', 'x'$$),
  ('empty local part',     $$'@example.com', 'j@example.org', 'S', 'x'$$),
  ('no domain dot',        $$'a@localhost', 'j@example.org', 'S', 'x'$$),
  ('empty domain label',   $$'a@example..com', 'j@example.org', 'S', 'x'$$),
  ('space inside',         $$'a b@example.com', 'j@example.org', 'S', 'x'$$),
  ('unclosed <',           $$'Shop <a@example.com', 'j@example.org', 'S', 'x'$$),
  ('text after >',         $$'Shop <a@example.com> x', 'j@example.org', 'S', 'x'$$),
  ('empty <>',             $$'Shop <>', 'j@example.org', 'S', 'x'$$),
  ('unclosed quote',       $$'"Shop <a@example.com>', 'j@example.org', 'S', 'x'$$),
  ('quote then no <',      $$'"Shop" a@example.com', 'j@example.org', 'S', 'x'$$),
  ('name with newline',    $$E'Sh\nop <a@example.com>', 'j@example.org', 'S', 'x'$$),
  ('too long',             $$repeat('a', 60) || '@' || repeat('b', 200) || '.com', 'j@example.org', 'S', 'x'$$),
  ('local part too long',  $$repeat('a', 65) || '@example.com', 'j@example.org', 'S', 'x'$$),
  ('recipients NULL',      $$'a@example.com', NULL, 'S', 'x'$$),
  ('recipients empty',     $$'a@example.com', '', 'S', 'x'$$),
  ('unquoted comma name',  $$'a@example.com', 'Doe, Jane <j@example.org>', 'S', 'x'$$),
  ('empty list element',   $$'a@example.com', 'j@example.org,,k@example.org', 'S', 'x'$$),
  ('trailing comma',       $$'a@example.com', 'j@example.org,', 'S', 'x'$$),
  ('bad cc',               $$'a@example.com', 'j@example.org', 'S', 'x', cc => 'nobody'$$),
  ('bad bcc',              $$'a@example.com', 'j@example.org', 'S', 'x', bcc => 'x@y'$$),
  ('bad reply_to',         $$'a@example.com', 'j@example.org', 'S', 'x', reply_to => '<>'$$)
) v(label, args);

-- Subject and content.
SELECT label, s(args) FROM (VALUES
  ('subject NULL',         $$'a@example.com', 'j@example.org', NULL, 'x'$$),
  ('subject blank',        $$'a@example.com', 'j@example.org', '   ', 'x'$$),
  ('subject 256 chars',    $$'a@example.com', 'j@example.org', repeat('é', 256), 'x'$$),
  ('no html nor plain',    $$'a@example.com', 'j@example.org', 'S'$$),
  ('both empty',           $$'a@example.com', 'j@example.org', 'S', '', ''$$)
) v(label, args);
-- 255 characters (510 bytes) is fine: it fails only later, at the mock.
\! curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary '{"status": 400, "message": "stop here", "times": 1}' "$MAILEROO_MOCK_URL/_mock/rules"
SELECT s($$'a@example.com', 'j@example.org', repeat('é', 255), 'x'$$);

-- Tags and headers.
SELECT label, s(args) FROM (VALUES
  ('tags array',           $$'a@example.com', 'j@example.org', 'S', 'x', tags => '[1]'$$),
  ('tags scalar',          $$'a@example.com', 'j@example.org', 'S', 'x', tags => '"x"'$$),
  ('tags nested',          $$'a@example.com', 'j@example.org', 'S', 'x', tags => '{"a": {"b": 1}}'$$),
  ('tags null value',      $$'a@example.com', 'j@example.org', 'S', 'x', tags => '{"a": null}'$$),
  ('tags empty key',       $$'a@example.com', 'j@example.org', 'S', 'x', tags => '{"": "x"}'$$),
  ('tag key 129 chars',    $$'a@example.com', 'j@example.org', 'S', 'x', tags => jsonb_build_object(repeat('k', 129), 'v')$$),
  ('tag value 769 chars',  $$'a@example.com', 'j@example.org', 'S', 'x', tags => jsonb_build_object('k', repeat('ü', 769))$$),
  ('headers array',        $$'a@example.com', 'j@example.org', 'S', 'x', headers => '[]'$$),
  ('header name space',    $$'a@example.com', 'j@example.org', 'S', 'x', headers => '{"X Bad": "1"}'$$),
  ('header value newline', $$'a@example.com', 'j@example.org', 'S', 'x', headers => '{"X-A": "1\r\nBcc: evil@example.com"}'$$),
  ('header key 129 chars', $$'a@example.com', 'j@example.org', 'S', 'x', headers => jsonb_build_object(repeat('k', 129), 'v')$$),
  ('header value 769',     $$'a@example.com', 'j@example.org', 'S', 'x', headers => jsonb_build_object('X-A', repeat('v', 769))$$)
) v(label, args);
-- At the limits (128 and 768 characters) they pass.
\! curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary '{"status": 400, "message": "stop here", "times": 1}' "$MAILEROO_MOCK_URL/_mock/rules"
SELECT s($$'a@example.com', 'j@example.org', 'S', 'x', tags => jsonb_build_object(repeat('ķ', 128), repeat('ü', 768))$$);

-- Attachments.
SELECT label, s(args) FROM (VALUES
  ('NULL element',         $$'a@example.com', 'j@example.org', 'S', 'x', attachments => ARRAY[NULL::maileroo_attachment]$$),
  ('file_name NULL',       $$'a@example.com', 'j@example.org', 'S', 'x', attachments => ARRAY[maileroo_attachment(NULL, 'x')]$$),
  ('file_name empty',      $$'a@example.com', 'j@example.org', 'S', 'x', attachments => ARRAY[maileroo_attachment(' ', 'x')]$$),
  ('content NULL',         $$'a@example.com', 'j@example.org', 'S', 'x', attachments => ARRAY[maileroo_attachment('a.txt', NULL)]$$),
  ('content empty',        $$'a@example.com', 'j@example.org', 'S', 'x', attachments => ARRAY[maileroo_attachment('a.txt', '')]$$),
  ('bad content_type',     $$'a@example.com', 'j@example.org', 'S', 'x', attachments => ARRAY[maileroo_attachment('a.txt', 'x', 'text')]$$),
  ('second one bad',       $$'a@example.com', 'j@example.org', 'S', 'x', attachments => ARRAY[maileroo_attachment('a.txt', 'x'), maileroo_attachment(E'b\n.txt', 'x')]$$)
) v(label, args);

-- reference_id, scheduled_at.
SELECT label, s(args) FROM (VALUES
  ('reference_id short',   $$'a@example.com', 'j@example.org', 'S', 'x', reference_id => 'abc'$$),
  ('reference_id not hex', $$'a@example.com', 'j@example.org', 'S', 'x', reference_id => 'zzzzzzzzzzzzzzzzzzzzzzzz'$$),
  ('reference_id spaces',  $$'a@example.com', 'j@example.org', 'S', 'x', reference_id => ' aaaaaaaaaaaaaaaaaaaaaaaa'$$),
  ('scheduled in the past',$$'a@example.com', 'j@example.org', 'S', 'x', scheduled_at => now() - interval '1 minute'$$),
  ('scheduled 22 days',    $$'a@example.com', 'j@example.org', 'S', 'x', scheduled_at => now() + interval '22 days'$$),
  ('scheduled infinity',   $$'a@example.com', 'j@example.org', 'S', 'x', scheduled_at => 'infinity'$$)
) v(label, args);

-- Templates.
SELECT label, try(q) FROM (VALUES
  ('template_id NULL',     $$SELECT maileroo_send_template_now('a@example.com', 'j@example.org', 'S', NULL)$$),
  ('template_id zero',     $$SELECT maileroo_send_template_now('a@example.com', 'j@example.org', 'S', 0)$$),
  ('template_data array',  $$SELECT maileroo_send_template_now('a@example.com', 'j@example.org', 'S', 1, '[1]')$$),
  ('template_data scalar', $$SELECT maileroo_send_template_now('a@example.com', 'j@example.org', 'S', 1, '3')$$)
) v(label, q);

-- None of these reached the mock but the two sent on purpose.
\! curl -s "$MAILEROO_MOCK_URL/_mock/stats" | python3 -c 'import json,sys; print("requests:", json.load(sys.stdin)["requests"])'

-- Maileroo's failures, one SQLSTATE per kind (see the README).
\! curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary '[{"path": "/api/v2/emails", "status": 400, "message": "The subject field is required."}, {"path": "/api/v2/emails", "status": 422}, {"path": "/api/v2/emails", "status": 401}, {"path": "/api/v2/emails", "status": 403}, {"path": "/api/v2/emails", "status": 429, "retry_after": 30}, {"path": "/api/v2/emails", "status": 429}, {"path": "/api/v2/emails", "status": 429, "headers": {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}}, {"path": "/api/v2/emails", "status": 429, "headers": {"Retry-After": "soon"}}, {"path": "/api/v2/emails", "status": 500}, {"path": "/api/v2/emails", "status": 503, "retry_after": 5}, {"path": "/api/v2/emails", "mode": "nonjson"}, {"path": "/api/v2/emails", "status": 502, "body": "upstream \u00e9 failure\n\n   with   spaces"}, {"path": "/api/v2/emails", "status": 408}, {"path": "/api/v2/emails", "mode": "malformed"}, {"path": "/api/v2/emails", "status": 200, "body": ""}, {"path": "/api/v2/emails", "status": 200, "body": "[1]"}, {"path": "/api/v2/emails", "status": 201, "json": {"message": "no success"}}, {"path": "/api/v2/emails", "mode": "success_false"}, {"path": "/api/v2/emails", "status": 400, "json": {"success": false}}, {"path": "/api/v2/emails", "status": 301, "headers": {"Location": "https://example.com/"}, "body": ""}]' "$MAILEROO_MOCK_URL/_mock/rules"
SELECT label, s($$'a@example.com', 'j@example.org', 'S', 'x', reference_id => '0123456789abcdef01234567'$$)
  FROM unnest(ARRAY['400 with a message', '422', '401', '403', '429 with Retry-After', '429',
                    '429 Retry-After date passed', '429 Retry-After unreadable',
                    '500', '503', '502 HTML', '502 text', '408',
                    '200 truncated JSON', '200 empty', '200 not an object', '201 without success',
                    '200 success:false', '400 without a message', '301 redirect (not followed)']) WITH ORDINALITY AS l(label, n)
 ORDER BY n;
-- A deeply nested or huge answer is judged without trouble.
\! python3 -c 'import json,sys; print(json.dumps([{"path": "/api/v2/emails", "status": 200, "body": "[" * 100000}, {"path": "/api/v2/emails", "status": 500, "body": "x" * 3000000}, {"path": "/api/v2/emails", "status": 400, "body": "{\"success\":false,\"message\":\"bad \\u0000 byte\"}"}, {"path": "/api/v2/emails", "status": 400, "body": "{\"success\":false,\"message\":\"tab\\there\"}"}]))' | curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary @- "$MAILEROO_MOCK_URL/_mock/rules"
SELECT left(split_part(s($$'a@example.com', 'j@example.org', 'S', 'x'$$), E'\n', 1), 120) AS error
  FROM generate_series(1, 4);

-- A connection closed without an answer (libcurl retries once on a fresh
-- connection when a reused one was closed: every attempt is dropped here).
\! curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary '{"path": "/api/v2/emails", "mode": "drop", "times": 0}' "$MAILEROO_MOCK_URL/_mock/rules"
SELECT s($$'a@example.com', 'j@example.org', 'S', 'x'$$);
\! curl -s -o /dev/null -X DELETE "$MAILEROO_MOCK_URL/_mock/rules"

-- No server listening, and a server that never answers (libcurl's own
-- description, which differs between its versions, and the DETAIL, which
-- carries timings, are left out here).
ALTER SERVER mock OPTIONS (SET api_url 'http://127.0.0.1:1/api/v2');
SELECT substring(s($$'a@example.com', 'j@example.org', 'S', 'x'$$) FROM '^MR000: could not reach Maileroo') AS error;
DO $$ BEGIN EXECUTE format('ALTER SERVER mock OPTIONS (SET api_url %L)', current_setting('maileroo_test.mock_url')); END $$;
\! curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary '{"path": "/api/v2/emails", "mode": "hang"}' "$MAILEROO_MOCK_URL/_mock/rules"
SET maileroo.timeout = '300ms';
SELECT split_part(s($$'a@example.com', 'j@example.org', 'S', 'x'$$), E'\n', 1) AS error;
RESET maileroo.timeout;
-- The same backend sends normally afterwards.
SELECT maileroo_send_now('a@example.com', 'j@example.org', 'S', 'x', reference_id => '0123456789abcdef01234567');

-- Without a key nothing is sent, and the error says how to set one.
DROP USER MAPPING FOR PUBLIC SERVER mock;
SELECT s($$'a@example.com', 'j@example.org', 'S', 'x'$$);
CREATE USER MAPPING FOR PUBLIC SERVER mock OPTIONS (api_key 'test-key');

-- Only a superuser may point the account elsewhere or change the key.
CREATE ROLE maileroo_sender;
GRANT EXECUTE ON FUNCTION try(text) TO maileroo_sender;
SET ROLE maileroo_sender;
SELECT try($$ALTER SERVER mock OPTIONS (SET api_url 'http://attacker.example.com/api/v2')$$);
SELECT try($$CREATE USER MAPPING FOR PUBLIC SERVER mock OPTIONS (api_key 'other')$$);
-- The key is hidden from other roles.
SELECT try($$SELECT umoptions FROM pg_user_mapping$$);
SELECT srvname, umoptions FROM pg_user_mappings;
SELECT count(*) AS visible FROM pg_settings WHERE name LIKE 'maileroo.%key%';
-- Nothing that sends or reads Maileroo is executable by PUBLIC.
SELECT try($$SELECT maileroo_send_now('a@example.com', 'j@example.org', 'S', 'x')$$);
RESET ROLE;
SELECT p.proname, has_function_privilege('maileroo_sender', p.oid, 'EXECUTE') AS executable
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'maileroo'
 WHERE p.proname IN ('maileroo_send_now', 'maileroo_send_template_now', 'maileroo_scheduled',
                     'maileroo_cancel_scheduled', 'maileroo_attachment', 'maileroo_reference_id')
 ORDER BY 1;
-- Granted EXECUTE, the role still needs USAGE on the account.
GRANT EXECUTE ON FUNCTION maileroo_send_now(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text) TO maileroo_sender;
SET ROLE maileroo_sender;
SELECT try($$SELECT maileroo_send_now('a@example.com', 'j@example.org', 'S', 'x')$$);
RESET ROLE;
GRANT USAGE ON FOREIGN SERVER mock TO maileroo_sender;
SET ROLE maileroo_sender;
SELECT maileroo_send_now('a@example.com', 'j@example.org', 'S', 'x', reference_id => '0123456789abcdef01234567');
SELECT maileroo_reference_id() ~ '^[0-9a-f]{24}$' AS public_reference_id;
-- New ids stay distinct and well-formed over many calls in one session.
SELECT count(DISTINCT id) AS distinct_ids, bool_and(id ~ '^[0-9a-f]{24}$') AS all_hex
  FROM (SELECT maileroo_reference_id() AS id FROM generate_series(1, 1000)) s;
RESET ROLE;
REVOKE ALL ON FUNCTION maileroo_send_now(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text) FROM maileroo_sender;
REVOKE ALL ON FOREIGN SERVER mock FROM maileroo_sender;
REVOKE ALL ON FUNCTION try(text) FROM maileroo_sender;
DROP ROLE maileroo_sender;

\! curl -s -o /dev/null -X DELETE "$MAILEROO_MOCK_URL/_mock/rules"
DROP FUNCTION s(text);
DROP FUNCTION try(text);
DROP EXTENSION maileroo CASCADE;
