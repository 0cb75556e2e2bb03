-- The outbox: what maileroo_send queues, who sees it, and what a rollback
-- leaves.  Everything here runs in transactions that roll back, so nothing
-- is delivered and the output does not depend on the worker.
CREATE EXTENSION maileroo;
-- The sending account: the mock Maileroo server the test run started.
DO $$ BEGIN EXECUTE format('CREATE SERVER mock FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url %L)',
                           current_setting('maileroo_test.mock_url')); END $$;
CREATE USER MAPPING FOR PUBLIC SERVER mock OPTIONS (api_key 'test-key');
-- Invalid input is refused before anything is queued.
SELECT maileroo_send('not-an-address', 'jane@example.org', 'Hello', plain => 'hi');
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Hello');
SELECT count(*) AS queued FROM maileroo_outbox;
-- One row per message, with the request it will send.
BEGIN;
SELECT maileroo_send('Shop <shop@example.com>', 'jane@example.org', 'Hello',
                     plain => 'hi', reference_id => 'AAAAAAAAAAAAAAAAAAAAAAA1');
SELECT maileroo_send_template('shop@example.com', 'jane@example.org', 'Welcome', 42,
                              template_data => '{"name": "Jane"}', reference_id => 'aaaaaaaaaaaaaaaaaaaaaaa2');
SELECT reference_id, endpoint, status, attempts, next_attempt_at <= now() AS due,
       lease_until, sent_at, last_http_status, last_error, response, queued_by
  FROM maileroo_outbox ORDER BY reference_id;
SELECT request->'from' AS sender, request->'to' AS recipients, request->>'reference_id' AS ref
  FROM maileroo_outbox ORDER BY reference_id;
-- A reference_id can be queued once.
SAVEPOINT s;
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Again', plain => 'hi',
                     reference_id => 'aaaaaaaaaaaaaaaaaaaaaaa1');
ROLLBACK TO s;
-- A savepoint rolled back takes its message with it.
SAVEPOINT t;
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'Gone', plain => 'hi',
                     reference_id => 'aaaaaaaaaaaaaaaaaaaaaaa3');
ROLLBACK TO t;
SELECT count(*) AS rows_after_savepoint FROM maileroo_outbox;
-- Cancelling: a queued message can be cancelled once; an unknown one cannot.
SELECT maileroo_cancel('aaaaaaaaaaaaaaaaaaaaaaa1') AS cancelled,
       maileroo_cancel('aaaaaaaaaaaaaaaaaaaaaaa1') AS again,
       maileroo_cancel('ffffffffffffffffffffffff') AS unknown;
SELECT reference_id, status, last_error FROM maileroo_outbox ORDER BY reference_id;
-- Only the statuses of the contract are accepted.
UPDATE maileroo_outbox SET status = 'lost';
ROLLBACK;
-- A rolled-back transaction leaves nothing.
SELECT count(*) AS queued FROM maileroo_outbox;
-- Roles: queueing needs EXECUTE but no privilege on the table; a role sees
-- and cancels only what it queued.
CREATE ROLE regress_outbox_alice;
CREATE ROLE regress_outbox_bob;
GRANT EXECUTE ON FUNCTION maileroo_send(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text) TO regress_outbox_alice, regress_outbox_bob;
GRANT USAGE ON FOREIGN SERVER mock TO regress_outbox_alice, regress_outbox_bob;
GRANT EXECUTE ON FUNCTION maileroo_cancel(text) TO regress_outbox_alice, regress_outbox_bob;
BEGIN;
SET LOCAL ROLE regress_outbox_alice;
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'From Alice', plain => 'hi',
                     reference_id => 'aaaaaaaaaaaaaaaaaaaaaaa4');
SAVEPOINT p;
SELECT count(*) FROM maileroo_outbox;
ROLLBACK TO p;
RESET ROLE;
GRANT SELECT ON maileroo_outbox TO regress_outbox_alice, regress_outbox_bob;
SET LOCAL ROLE regress_outbox_bob;
SELECT maileroo_send('shop@example.com', 'jane@example.org', 'From Bob', plain => 'hi',
                     reference_id => 'aaaaaaaaaaaaaaaaaaaaaaa5');
SELECT reference_id, queued_by FROM maileroo_outbox;
SELECT maileroo_cancel('aaaaaaaaaaaaaaaaaaaaaaa4') AS bob_cancels_alice;
SET LOCAL ROLE regress_outbox_alice;
SELECT reference_id, queued_by FROM maileroo_outbox;
SELECT maileroo_cancel('aaaaaaaaaaaaaaaaaaaaaaa4') AS alice_cancels_hers;
SAVEPOINT q;
UPDATE maileroo_outbox SET status = 'queued';
ROLLBACK TO q;
RESET ROLE;
SELECT reference_id, status, queued_by FROM maileroo_outbox ORDER BY reference_id;
ROLLBACK;
-- The statements run as the outbox owner resolve nothing through the
-- caller's search_path: an operator planted ahead of pg_catalog is not used.
CREATE SCHEMA regress_outbox_trap AUTHORIZATION regress_outbox_alice;
\c
SET ROLE regress_outbox_alice;
CREATE FUNCTION regress_outbox_trap.name_eq(name, name) RETURNS boolean
	LANGUAGE plpgsql AS $$BEGIN RAISE NOTICE 'trap ran as %', current_user; RETURN $1::text = $2::text; END$$;
CREATE OPERATOR regress_outbox_trap.= (LEFTARG = name, RIGHTARG = name, FUNCTION = regress_outbox_trap.name_eq);
CREATE FUNCTION regress_outbox_trap.text_eq(text, text) RETURNS boolean
	LANGUAGE plpgsql AS $$BEGIN RAISE NOTICE 'trap ran as %', current_user; RETURN $1 OPERATOR(pg_catalog.=) $2; END$$;
CREATE OPERATOR regress_outbox_trap.= (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_outbox_trap.text_eq);
SET search_path = regress_outbox_trap, pg_catalog, public;
BEGIN;
SELECT public.maileroo_send('shop@example.com', 'jane@example.org', 'Trap', plain => 'hi',
                            reference_id => 'aaaaaaaaaaaaaaaaaaaaaaa6');
SELECT public.maileroo_cancel('aaaaaaaaaaaaaaaaaaaaaaa6') AS cancelled;
ROLLBACK;
RESET search_path;
RESET ROLE;
DROP SCHEMA regress_outbox_trap CASCADE;
-- Without EXECUTE, nothing.
SET ROLE regress_outbox_bob;
SELECT maileroo_worker_status();
RESET ROLE;
REVOKE ALL ON maileroo_outbox FROM regress_outbox_alice, regress_outbox_bob;
REVOKE ALL ON FUNCTION maileroo_send(text, text, text, text, text, text, text, text, jsonb, jsonb, maileroo_attachment[], boolean, timestamptz, text, boolean, text) FROM regress_outbox_alice, regress_outbox_bob;
REVOKE ALL ON FOREIGN SERVER mock FROM regress_outbox_alice, regress_outbox_bob;
REVOKE ALL ON FUNCTION maileroo_cancel(text) FROM regress_outbox_alice, regress_outbox_bob;
DROP ROLE regress_outbox_alice;
DROP ROLE regress_outbox_bob;
-- What maileroo_worker_status() returns.
SELECT database, queued, retrying, sending, sent, failed, cancelled, suppressed
  FROM maileroo_worker_status();
DROP EXTENSION maileroo CASCADE;
