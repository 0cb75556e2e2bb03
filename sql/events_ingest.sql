-- Webhook ingest: signatures, idempotency, rejected events, and a role
-- that may only call maileroo_ingest.
CREATE EXTENSION maileroo;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

-- maileroo_verify_signature: hex HMAC-SHA256 of the raw body.
-- RFC 4231 test case 2.
SELECT maileroo_verify_signature('what do ya want for nothing?',
	'5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843', 'Jefe') AS rfc4231;
\set body '{"event_id": "s1", "event_type": "delivered", "event_time": 1710545542, "event_data": {"to": "a@example.org"}}'
\set sig '2c5ab4a02f18332bcce232cbccb0df29f487882748edf93d8e8caa0c4ef287c3'
SELECT label, maileroo_verify_signature(:'body', sig, secret) AS valid FROM (VALUES
	('lower-case hex', :'sig', 'whsec_test'),
	('upper-case hex', upper(:'sig'), 'whsec_test'),
	('sha256= prefix', 'sha256=' || :'sig', 'whsec_test'),
	('SHA256= prefix', 'SHA256=' || upper(:'sig'), 'whsec_test'),
	('surrounding spaces', ' ' || :'sig' || ' ', 'whsec_test'),
	('wrong secret', :'sig', 'whsec_other'),
	('one digit changed', overlay(:'sig' placing '0' from 64), 'whsec_test'),
	('too short', left(:'sig', 63), 'whsec_test'),
	('too long', :'sig' || '0', 'whsec_test'),
	('not hex', overlay(:'sig' placing 'zz' from 1), 'whsec_test'),
	('other prefix', 'md5=' || :'sig', 'whsec_test'),
	('empty', '', 'whsec_test')
) v(label, sig, secret);
-- The raw bytes are verified: the same JSON spaced differently does not match.
SELECT maileroo_verify_signature(:'body'::jsonb::text, :'sig', 'whsec_test') AS reserialised;

-- While no sending account has a webhook secret, ingest needs no signature.
CREATE SERVER hooks FOREIGN DATA WRAPPER maileroo_fdw;
SELECT maileroo_ingest(:'body');
-- Deliveries repeat: the same event again is not new.
SELECT maileroo_ingest(:'body');
-- A batch: new events are counted, known ones are not, and an element that
-- is not an event is kept with its error (a WARNING says so).
SELECT maileroo_ingest('[
	{"event_id": "s1", "event_type": "delivered", "event_time": 1710545542},
	{"event_id": "s2", "event_type": "opened", "event_time": 1710545600, "event_data": {"ip": "10.1.2.3"}},
	{"event_id": "s3", "event_time": 1710545601},
	{"event_id": "s2", "event_type": "opened", "event_time": 1710545600},
	"not an event",
	{"event_id": "s4", "event_type": "failed", "event_time": 1710545602.5, "event_data": {"reason": "550 5.1.1 unknown user"}}
]');
SELECT maileroo_ingest('{"events": [{"event_id": "s5", "event_type": "clicked", "event_time": 1710545603}]}');
SELECT event_id, event_type, event_time, recipient, ip, smtp_code, bounce_class
FROM maileroo_events ORDER BY event_id;
SELECT id, body, error, sqlstate, received_at IS NOT NULL AS has_time
FROM maileroo_rejected_events ORDER BY id;
-- A single object that is JSON but not an event is kept too.
SELECT maileroo_ingest('{"event_type": "opened", "event_time": 1}');
-- A body that is not JSON at all is an error, and nothing is stored.
SELECT maileroo_ingest('{"event_id": "s9", "event_type": "opened", "event_time": 1');
SELECT maileroo_ingest('<html>502</html>');
SELECT maileroo_ingest(NULL);
SELECT count(*) AS events, (SELECT count(*) FROM maileroo_rejected_events) AS rejected
FROM maileroo_events;

-- With a secret, a missing or wrong signature is an error and nothing is
-- stored; the right one (in any accepted spelling) is required.
CREATE USER MAPPING FOR PUBLIC SERVER hooks OPTIONS (webhook_secret 'whsec_test');
SELECT maileroo_ingest('{"event_id": "s1", "event_type": "delivered", "event_time": 1710545542, "event_data": {"to": "a@example.org"}}');
SELECT maileroo_ingest(:'body', '');
SELECT maileroo_ingest(:'body', 'sha256=' || repeat('0', 64));
SELECT maileroo_ingest(:'body', 'garbage');
SELECT maileroo_ingest(:'body'::jsonb::text, :'sig');
TRUNCATE maileroo_events;
SELECT maileroo_ingest(:'body', :'sig');
SELECT maileroo_ingest(:'body', 'sha256=' || upper(:'sig'));
SELECT count(*) FROM maileroo_events;

-- A role that holds only EXECUTE on maileroo_ingest can ingest, and can
-- read neither the tables nor the secret.
CREATE ROLE regress_maileroo_ingest;
GRANT EXECUTE ON FUNCTION maileroo_ingest(text, text, text) TO regress_maileroo_ingest;
SET ROLE regress_maileroo_ingest;
SELECT maileroo_ingest(:'body', 'sha256=' || :'sig');
-- A wrong signature is refused from that role too.
SELECT maileroo_ingest('[{"event_id": "r1", "event_type": "opened", "event_time": 1}]', 'sha256=' || :'sig');
SELECT count(*) FROM maileroo_events;
SELECT count(*) FROM maileroo_events_delivered;
SELECT count(*) FROM maileroo_rejected_events;
SELECT umoptions FROM pg_user_mappings;
SELECT umoptions FROM pg_user_mapping;
SELECT maileroo_ingest_authenticate(:'body', :'sig', NULL);
-- The pure functions stay usable.
SELECT event_id FROM maileroo_parse_event(:'body');
RESET ROLE;
-- Unsigned from that role too, once the secret is unset.
DROP USER MAPPING FOR PUBLIC SERVER hooks;
SET ROLE regress_maileroo_ingest;
SELECT maileroo_ingest('[{"event_id": "r1", "event_type": "opened", "event_time": 1}, {"event_id": "r2"}]');
RESET ROLE;
SELECT event_id, event_type FROM maileroo_events ORDER BY 1;
SELECT id, body, error, sqlstate FROM maileroo_rejected_events WHERE id > 3 ORDER BY id;

-- Other roles cannot call it at all.
CREATE ROLE regress_maileroo_other;
SET ROLE regress_maileroo_other;
SELECT maileroo_ingest(:'body');
RESET ROLE;

-- pg_dump keeps the rows of every events table and of the rejected events.
SELECT c.relname, c.relkind
FROM pg_extension x, unnest(x.extconfig) AS t(oid) JOIN pg_class c ON c.oid = t.oid
WHERE x.extname = 'maileroo' AND c.relname LIKE 'maileroo\_%event%' ORDER BY 1;

DROP EXTENSION maileroo CASCADE;
DROP ROLE regress_maileroo_ingest;
DROP ROLE regress_maileroo_other;
