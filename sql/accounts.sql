-- Sending accounts: the maileroo_fdw validator, how a send picks its
-- account, who may use one, which key goes out, and per-account webhook
-- secrets.
CREATE EXTENSION maileroo;
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

-- The wrapper: handler-less, with the validator, granted to nobody.
SELECT fdwname, fdwhandler = 0 AS no_handler, fdwvalidator::regproc, fdwacl
  FROM pg_foreign_data_wrapper WHERE fdwname = 'maileroo_fdw';

-- The validator refuses unknown options, listing the valid ones, and says
-- where a secret belongs.
SELECT label, try(stmt) FROM (VALUES
  ('wrapper option',        $$ALTER FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url 'https://x.example')$$),
  ('unknown server option', $$CREATE SERVER bad FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (apiurl 'https://x.example')$$),
  ('key on the server',     $$CREATE SERVER bad FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_key 'k-visible')$$),
  ('server option in a mapping', $$CREATE SERVER bad FOREIGN DATA WRAPPER maileroo_fdw; CREATE USER MAPPING FOR PUBLIC SERVER bad OPTIONS (api_url 'https://x.example')$$)
) v(label, stmt);
-- Malformed URLs, domains and limits, each named (libcurl's reason for a
-- URL it cannot parse, which differs between its versions, is left out).
SELECT label, regexp_replace(try(format('CREATE SERVER bad FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (%s)', opts)),
                             E'\n  DETAIL: (No host|Port).*$', '') FROM (VALUES
  ('ftp url',          $$api_url 'ftp://smtp.example.com/api/v2'$$),
  ('no host',          $$api_url 'https://'$$),
  ('space in url',     $$api_url 'https://smtp example.com/api/v2'$$),
  ('query in url',     $$api_url 'https://smtp.example.com/api/v2?x=1'$$),
  ('bad port',         $$api_url 'https://smtp.example.com:99999/api'$$),
  ('domain no dot',    $$domains 'localhost'$$),
  ('domain empty item', $$domains 'a.example,,b.example'$$),
  ('domain bad char',  $$domains 'a.example, b_c.example'$$),
  ('rate not numeric', $$rate_limit 'fast'$$),
  ('rate negative',    $$rate_limit '-1'$$),
  ('rate nan',         $$rate_limit 'NaN'$$),
  ('burst fraction',   $$burst '1.5'$$),
  ('burst zero',       $$burst '0'$$),
  ('concurrency huge', $$concurrency '99999'$$),
  ('key file relative', $$api_key_file 'keys/shop.key'$$),
  ('key file missing', $$api_key_file '/nonexistent/maileroo/shop.key'$$)
) v(label, opts);
-- Keys: never quoted, whatever is wrong with them.
CREATE SERVER shop FOREIGN DATA WRAPPER maileroo_fdw
  OPTIONS (domains 'Shop.Example, news.shop.example', rate_limit '12.5', burst '20', concurrency '4');
SELECT label, try(stmt) FROM (VALUES
  ('control character', format('CREATE USER MAPPING FOR PUBLIC SERVER shop OPTIONS (api_key %L)', E'sk-secret\nInjected: 1')),
  ('tab',               format('CREATE USER MAPPING FOR PUBLIC SERVER shop OPTIONS (api_key %L)', E'sk-secret\t2')),
  ('empty key',         $$CREATE USER MAPPING FOR PUBLIC SERVER shop OPTIONS (api_key '')$$),
  ('empty secret',      $$CREATE USER MAPPING FOR PUBLIC SERVER shop OPTIONS (webhook_secret '')$$)
) v(label, stmt);
-- A non-superuser may not name a file for the server to read.
CREATE ROLE regress_acct_owner;
GRANT USAGE ON FOREIGN DATA WRAPPER maileroo_fdw TO regress_acct_owner;
GRANT EXECUTE ON FUNCTION try(text) TO regress_acct_owner;
SET ROLE regress_acct_owner;
SELECT try($$CREATE SERVER theirs FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_key_file '/etc/passwd')$$);
RESET ROLE;
REVOKE ALL ON FOREIGN DATA WRAPPER maileroo_fdw FROM regress_acct_owner;
REVOKE ALL ON FUNCTION try(text) FROM regress_acct_owner;
DROP ROLE regress_acct_owner;
-- Valid options are kept as given.
SELECT srvname, srvoptions FROM pg_foreign_server WHERE srvname = 'shop';

-- Two accounts, one per sender domain, each with its own key; the mock
-- accepts both.
DO $$ BEGIN
  EXECUTE format('ALTER SERVER shop OPTIONS (ADD api_url %L)', current_setting('maileroo_test.mock_url'));
  EXECUTE format('CREATE SERVER news FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url %L, domains %L)',
                 current_setting('maileroo_test.mock_url'), 'news.example');
END $$;
CREATE USER MAPPING FOR PUBLIC SERVER shop OPTIONS (api_key 'key-shop');
CREATE USER MAPPING FOR PUBLIC SERVER news OPTIONS (api_key 'key-news');
\! curl -s -o /dev/null -X POST -d '{"keys": ["key-shop", "key-news"]}' "$MAILEROO_MOCK_URL/_mock/keys"

-- The sender's domain picks the account (case does not matter); the
-- outbox records its name, never its key.
BEGIN;
SELECT maileroo_send('Shop <orders@SHOP.example>', 'jane@example.org', 'Order', plain => 'x',
                     reference_id => 'a00000000000000000000001');
SELECT maileroo_send('news@news.shop.example', 'jane@example.org', 'News', plain => 'x',
                     reference_id => 'a00000000000000000000002');
SELECT maileroo_send('hello@news.example', 'jane@example.org', 'Hello', plain => 'x',
                     reference_id => 'a00000000000000000000003');
-- An explicit account wins over the domain, and existing positional
-- arguments keep their meaning.
SELECT maileroo_send('hello@news.example', 'jane@example.org', 'Hi', NULL, 'x',
                     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'a00000000000000000000004',
                     false, 'shop');
SELECT maileroo_send_template('hello@news.example', 'jane@example.org', 'T', 7,
                              reference_id => 'a00000000000000000000005', account => 'news');
SELECT reference_id, account, queued_by FROM maileroo_outbox ORDER BY 1;
SELECT count(*) AS rows_with_a_key FROM maileroo_outbox o
 WHERE o::text LIKE '%key-shop%' OR o::text LIKE '%key-news%';
ROLLBACK;
-- No account fits: an error naming the domain, and nothing is queued.
SELECT try($$SELECT maileroo_send('a@other.example', 'jane@example.org', 'S', plain => 'x')$$);
SELECT try($$SELECT maileroo_send_now('a@other.example', 'jane@example.org', 'S', plain => 'x')$$);
SELECT try($$SELECT maileroo_send('a@shop.example', 'jane@example.org', 'S', plain => 'x', account => 'nosuch')$$);
CREATE FOREIGN DATA WRAPPER regress_other_fdw;
CREATE SERVER not_maileroo FOREIGN DATA WRAPPER regress_other_fdw;
SELECT try($$SELECT maileroo_send('a@shop.example', 'jane@example.org', 'S', plain => 'x', account => 'not_maileroo')$$);
DROP SERVER not_maileroo;
DROP FOREIGN DATA WRAPPER regress_other_fdw;
-- Two accounts claiming one domain: ambiguous, unless named.
ALTER SERVER news OPTIONS (SET domains 'news.example, shop.example');
SELECT try($$SELECT maileroo_send('a@shop.example', 'jane@example.org', 'S', plain => 'x')$$);
ALTER SERVER news OPTIONS (SET domains 'news.example');
SELECT count(*) AS queued FROM maileroo_outbox;

-- The synchronous path sends through the account's key: the mock records
-- the Authorization header of each request.
\! curl -s -o /dev/null -X DELETE "$MAILEROO_MOCK_URL/_mock/requests"
SELECT maileroo_send_now('orders@shop.example', 'jane@example.org', 'S', plain => 'x',
                         reference_id => 'b00000000000000000000001');
SELECT maileroo_send_now('hello@news.example', 'jane@example.org', 'S', plain => 'x',
                         reference_id => 'b00000000000000000000002');
SELECT maileroo_send_now('hello@news.example', 'jane@example.org', 'S', plain => 'x',
                         reference_id => 'b00000000000000000000003', account => 'shop');
\! curl -s "$MAILEROO_MOCK_URL/_mock/requests" | python3 -c 'import json,sys; [print(r["json"]["reference_id"], r["json"]["from"]["address"], r["headers"]["authorization"]) for r in json.load(sys.stdin)]'
-- A key rotated in the mapping is used by the next call, in the same session.
SET log_statement = 'none';
ALTER USER MAPPING FOR PUBLIC SERVER shop OPTIONS (SET api_key 'key-shop-2');
RESET log_statement;
\! curl -s -o /dev/null -X POST -d '{"keys": ["key-shop-2", "key-news"]}' "$MAILEROO_MOCK_URL/_mock/keys"
\! curl -s -o /dev/null -X DELETE "$MAILEROO_MOCK_URL/_mock/requests"
SELECT maileroo_send_now('orders@shop.example', 'jane@example.org', 'S', plain => 'x',
                         reference_id => 'b00000000000000000000004');
\! curl -s "$MAILEROO_MOCK_URL/_mock/requests" | python3 -c 'import json,sys; [print(r["json"]["reference_id"], r["headers"]["authorization"]) for r in json.load(sys.stdin)]'
-- A mapping for the sending role comes before the PUBLIC one.
CREATE USER MAPPING FOR CURRENT_USER SERVER shop OPTIONS (api_key 'key-news');
\! curl -s -o /dev/null -X DELETE "$MAILEROO_MOCK_URL/_mock/requests"
SELECT maileroo_send_now('orders@shop.example', 'jane@example.org', 'S', plain => 'x',
                         reference_id => 'b00000000000000000000005');
\! curl -s "$MAILEROO_MOCK_URL/_mock/requests" | python3 -c 'import json,sys; [print(r["json"]["reference_id"], r["headers"]["authorization"]) for r in json.load(sys.stdin)]'
DROP USER MAPPING FOR CURRENT_USER SERVER shop;
-- The account's api_url is where the request goes.
ALTER SERVER news OPTIONS (SET api_url 'http://127.0.0.1:1/api/v2/');
SELECT substring(try($$SELECT maileroo_send_now('hello@news.example', 'jane@example.org', 'S', plain => 'x')$$)
                 FROM '^MR000: could not reach Maileroo') AS error;
DO $$ BEGIN EXECUTE format('ALTER SERVER news OPTIONS (SET api_url %L)', current_setting('maileroo_test.mock_url')); END $$;
-- The listing and the cancel of scheduled mail go through an account too.
SELECT try($$SELECT * FROM maileroo_scheduled()$$);
SELECT count(*) FROM maileroo_scheduled(account => 'news');
SELECT count(*) FROM maileroo_scheduled(domain => 'shop.example');
SELECT maileroo_cancel_scheduled('c00000000000000000000001', account => 'shop');
SELECT maileroo_cancel_scheduled(NULL);

-- Who may send: USAGE on the account, checked when queueing and when
-- calling Maileroo, with a clear error; nothing is queued without it.
CREATE ROLE regress_acct_app;
GRANT EXECUTE ON FUNCTION try(text),
  maileroo_send(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text),
  maileroo_send_now(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text),
  maileroo_scheduled(integer, integer, text, text),
  maileroo_cancel_scheduled(text, text) TO regress_acct_app;
SET ROLE regress_acct_app;
SELECT try($$SELECT maileroo_send('orders@shop.example', 'jane@example.org', 'S', plain => 'x')$$);
SELECT try($$SELECT maileroo_send_now('orders@shop.example', 'jane@example.org', 'S', plain => 'x')$$);
SELECT try($$SELECT * FROM maileroo_scheduled(account => 'shop')$$);
SELECT try($$SELECT maileroo_cancel_scheduled('c00000000000000000000001', account => 'shop')$$);
-- Nor can it read the keys, or point the account elsewhere.
SELECT try($$SELECT umoptions FROM pg_user_mapping$$);
SELECT srvname, umuser::regrole, umoptions FROM pg_user_mappings ORDER BY 1;
SELECT try($$ALTER SERVER shop OPTIONS (SET api_url 'http://attacker.example/api/v2')$$);
RESET ROLE;
SELECT count(*) AS queued FROM maileroo_outbox;
-- USAGE on one account does not open the other.
GRANT USAGE ON FOREIGN SERVER news TO regress_acct_app;
SET ROLE regress_acct_app;
BEGIN;
SELECT maileroo_send('hello@news.example', 'jane@example.org', 'S', plain => 'x') IS NOT NULL AS queued;
SELECT try($$SELECT maileroo_send('orders@shop.example', 'jane@example.org', 'S', plain => 'x')$$);
SELECT try($$SELECT maileroo_send('hello@news.example', 'jane@example.org', 'S', plain => 'x', account => 'shop')$$);
ROLLBACK;
RESET ROLE;
REVOKE ALL ON FOREIGN SERVER news FROM regress_acct_app;
REVOKE ALL ON FUNCTION try(text),
  maileroo_send(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text),
  maileroo_send_now(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text),
  maileroo_scheduled(integer, integer, text, text),
  maileroo_cancel_scheduled(text, text) FROM regress_acct_app;
DROP ROLE regress_acct_app;

-- One account without domains serves every sender; one that lists its
-- domains serves only those.
DROP SERVER news CASCADE;
ALTER SERVER shop OPTIONS (DROP domains);
BEGIN;
SELECT maileroo_send('a@anything.example', 'jane@example.org', 'S', plain => 'x') IS NOT NULL AS queued;
SELECT account FROM maileroo_outbox;
ROLLBACK;
ALTER SERVER shop OPTIONS (ADD domains 'shop.example');
SELECT try($$SELECT maileroo_send('a@anything.example', 'jane@example.org', 'S', plain => 'x')$$);
DROP SERVER shop CASCADE;
SELECT try($$SELECT maileroo_send('a@shop.example', 'jane@example.org', 'S', plain => 'x')$$);

-- Webhook secrets per account: the named account's, or any account's.
CREATE SERVER hooks_a FOREIGN DATA WRAPPER maileroo_fdw;
CREATE SERVER hooks_b FOREIGN DATA WRAPPER maileroo_fdw;
CREATE SERVER hooks_none FOREIGN DATA WRAPPER maileroo_fdw;
\set body '{"event_id": "w1", "event_type": "delivered", "event_time": 1710545542}'
-- No secret anywhere: unsigned webhooks are accepted.
SELECT maileroo_ingest(:'body');
CREATE USER MAPPING FOR PUBLIC SERVER hooks_a OPTIONS (webhook_secret 'whsec-a');
CREATE USER MAPPING FOR PUBLIC SERVER hooks_b OPTIONS (webhook_secret 'whsec-b');
\set body2 '{"event_id": "w2", "event_type": "delivered", "event_time": 1710545543}'
-- HMAC-SHA256 from core's sha256 (RFC 2104), to sign test bodies.
CREATE FUNCTION hmac_hex(key text, msg text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE k bytea := convert_to(key, 'UTF8'); i bytea; o bytea;
BEGIN
  k := k || decode(repeat('00', 64 - length(k)), 'hex');
  i := k; o := k;
  FOR n IN 0..63 LOOP
    i := set_byte(i, n, get_byte(k, n) # 54);
    o := set_byte(o, n, get_byte(k, n) # 92);
  END LOOP;
  RETURN encode(sha256(o || sha256(i || convert_to(msg, 'UTF8'))), 'hex');
END $$;
SELECT hmac_hex('whsec-b', :'body2') AS sig_b, hmac_hex('whsec-a', :'body2') AS sig_a \gset
SELECT maileroo_verify_signature(:'body2', :'sig_b', 'whsec-b') AS helper_agrees;
-- Now a signature is required; either account's secret is accepted
-- without naming it, only the named one's when named.
SELECT try(format('SELECT maileroo_ingest(%L)', :'body2'));
SELECT try(format('SELECT maileroo_ingest(%L, %L, account => %L)', :'body2', :'sig_b', 'hooks_a'));
SELECT try(format('SELECT maileroo_ingest(%L, %L)', :'body2', 'sha256=' || repeat('0', 64)));
SELECT try(format('SELECT maileroo_ingest(%L, %L, account => %L)', :'body2', :'sig_a', 'nosuch'));
SELECT count(*) AS stored FROM maileroo_events WHERE event_id = 'w2';
SELECT maileroo_ingest(:'body2', :'sig_b');
SELECT maileroo_ingest(:'body2', :'sig_a', account => 'hooks_a');
-- An endpoint for an account without a secret takes unsigned webhooks.
SELECT maileroo_ingest('{"event_id": "w3", "event_type": "opened", "event_time": 1710545544}', account => 'hooks_none');
SELECT event_id FROM maileroo_events ORDER BY 1;

\! curl -s -o /dev/null -X POST "$MAILEROO_MOCK_URL/_mock/reset"
DROP FUNCTION try(text);
DROP FUNCTION hmac_hex(text, text);
DROP EXTENSION maileroo CASCADE;
