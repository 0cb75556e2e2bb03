-- Webhook events: Maileroo's published example payloads map to exactly the
-- rows written by hand, and every edge case of the envelope is typed as
-- documented.
CREATE EXTENSION maileroo;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

-- The five example payloads from Maileroo's webhook documentation, verbatim.
CREATE TEMP TABLE seed (n int, body text);
INSERT INTO seed VALUES (1, $json${
"domain_id": 774,
"event_data": {
"ip": "103.120.6.123",
"original_url": "https://example.com/confirm/link",
"user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36 Edg/122.0.0.0"
},
"event_id": "cb91d71458a75cb7160a2cca9c472a42a97bf925385998e0",
"event_time": 1710545577,
"event_type": "clicked",
"inserted_at": "2024-03-15T23:32:57.401Z",
"message_id": "<499840827041934075286474.8057.2024315233239@domain.com>",
"message_reference_id": "0ed7094bf9509ac3145c4aa97182be44",
"tags": null,
"user_id": 323
}$json$);
INSERT INTO seed VALUES (2, $json${
"domain_id": 789,
"event_data": {
"ip": "123.45.67.89",
"user_agent": "Mozilla/5.0 (Compatible; ExampleBrowser/1.0; Windows NT)"
},
"event_id": "ghij1234klmn5678opqr9101",
"event_time": 1710545567,
"event_type": "opened",
"inserted_at": "2024-03-15T23:32:47.664Z",
"message_id": "abcdef1234567890@examplemail.com",
"message_reference_id": "mrefabcdef1234567890",
"tags": null,
"user_id": 1003
}$json$);
INSERT INTO seed VALUES (3, $json${
"domain_id": 123,
"event_data": {
"to": "recipient@example.com"
},
"event_id": "abcd1234efgh5678ijkl9101",
"event_time": 1710545542,
"event_type": "delivered",
"inserted_at": "2024-03-15T23:32:22.397Z",
"message_id": "<1234567890abcdef@examplemail.com>",
"message_reference_id": "mref1234567890abcdef",
"tags": null,
"user_id": 1001
}$json$);
INSERT INTO seed VALUES (4, $json${
"domain_id": 123,
"event_data": {
"reason": "452-4.2.2 The recipient's inbox is out of storage space. Please direct the recipient to support link.",
"to": "example@email.com"
},
"event_id": "0dc2204928b817f0122d1e311aee0ee702ac378840ef7df5",
"event_time": 1710545557,
"event_type": "deferred",
"inserted_at": "2024-03-15T23:32:37.427Z",
"message_id": "<312897663424678224496834.5399.202431411321@domain.com>",
"message_reference_id": "982e548d6b5ff15562272aa42b1f4517",
"tags": null,
"user_id": 123
}$json$);
INSERT INTO seed VALUES (5, $json${
"domain_id": 123,
"event_data": {
"to": "jane.doe@example.com"
},
"event_id": "abcd1234efgh5678ijkl9101",
"event_time": 1710545542,
"event_type": "delivered",
"inserted_at": "2024-03-15T23:32:22.397Z",
"message_id": "<1234567890abcdef@examplemail.com>",
"message_reference_id": "mref1234567890abcdef",
"tags": {"tag1": "value1", "tag2": "value2"},
"user_id": 1001
}$json$);

-- The rows one would write by hand from those payloads.
CREATE TEMP TABLE by_hand (LIKE maileroo_events);
ALTER TABLE by_hand ADD COLUMN n int, ALTER received_at DROP NOT NULL;
INSERT INTO by_hand (n, event_id, event_type, event_time, inserted_at, domain_id, user_id,
		message_id, message_reference_id, recipient, ip, user_agent, url, reason,
		smtp_code, smtp_status, bounce_class, tags, event_data, extra) VALUES
(1, 'cb91d71458a75cb7160a2cca9c472a42a97bf925385998e0', 'clicked',
	'2024-03-15 23:32:57+00', '2024-03-15 23:32:57.401+00', 774, 323,
	'499840827041934075286474.8057.2024315233239@domain.com', '0ed7094bf9509ac3145c4aa97182be44',
	NULL, '103.120.6.123',
	'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36 Edg/122.0.0.0',
	'https://example.com/confirm/link', NULL, NULL, NULL, NULL, NULL,
	'{"ip": "103.120.6.123", "original_url": "https://example.com/confirm/link", "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36 Edg/122.0.0.0"}',
	NULL),
(2, 'ghij1234klmn5678opqr9101', 'opened',
	'2024-03-15 23:32:47+00', '2024-03-15 23:32:47.664+00', 789, 1003,
	'abcdef1234567890@examplemail.com', 'mrefabcdef1234567890',
	NULL, '123.45.67.89', 'Mozilla/5.0 (Compatible; ExampleBrowser/1.0; Windows NT)',
	NULL, NULL, NULL, NULL, NULL, NULL,
	'{"ip": "123.45.67.89", "user_agent": "Mozilla/5.0 (Compatible; ExampleBrowser/1.0; Windows NT)"}',
	NULL),
(3, 'abcd1234efgh5678ijkl9101', 'delivered',
	'2024-03-15 23:32:22+00', '2024-03-15 23:32:22.397+00', 123, 1001,
	'1234567890abcdef@examplemail.com', 'mref1234567890abcdef',
	'recipient@example.com', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	'{"to": "recipient@example.com"}', NULL),
(4, '0dc2204928b817f0122d1e311aee0ee702ac378840ef7df5', 'deferred',
	'2024-03-15 23:32:37+00', '2024-03-15 23:32:37.427+00', 123, 123,
	'312897663424678224496834.5399.202431411321@domain.com', '982e548d6b5ff15562272aa42b1f4517',
	'example@email.com', NULL, NULL, NULL,
	'452-4.2.2 The recipient''s inbox is out of storage space. Please direct the recipient to support link.',
	452, '4.2.2', 'soft', NULL,
	'{"to": "example@email.com", "reason": "452-4.2.2 The recipient''s inbox is out of storage space. Please direct the recipient to support link."}',
	NULL),
(5, 'abcd1234efgh5678ijkl9101', 'delivered',
	'2024-03-15 23:32:22+00', '2024-03-15 23:32:22.397+00', 123, 1001,
	'1234567890abcdef@examplemail.com', 'mref1234567890abcdef',
	'jane.doe@example.com', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	'{"tag1": "value1", "tag2": "value2"}', '{"to": "jane.doe@example.com"}', NULL);

-- Every column of every parsed payload equals the hand-written row
-- (received_at is now()).
SELECT s.n, (e.event_id, e.event_type, e.event_time, e.inserted_at, e.domain_id,
		e.user_id, e.message_id, e.message_reference_id, e.recipient, e.ip,
		e.user_agent, e.url, e.reason, e.smtp_code, e.smtp_status,
		e.bounce_class, e.tags, e.event_data, e.extra)
	IS NOT DISTINCT FROM
	(h.event_id, h.event_type, h.event_time, h.inserted_at, h.domain_id,
		h.user_id, h.message_id, h.message_reference_id, h.recipient, h.ip,
		h.user_agent, h.url, h.reason, h.smtp_code, h.smtp_status,
		h.bounce_class, h.tags, h.event_data, h.extra) AS as_by_hand,
	e.received_at = now() AS received_now
FROM seed s, maileroo_parse_event(s.body) e, by_hand h
WHERE h.n = s.n ORDER BY s.n;

-- The same rows, as a user sees them.
\x on
SELECT e.event_id, e.event_type, e.event_time, e.inserted_at, e.domain_id, e.user_id,
	e.message_id, e.message_reference_id, e.recipient, e.ip, e.user_agent, e.url,
	e.reason, e.smtp_code, e.smtp_status, e.bounce_class, e.tags, e.event_data, e.extra
FROM seed s, maileroo_parse_event(s.body) e WHERE s.n IN (1, 4) ORDER BY s.n;
\x off

-- The jsonb form gives the same rows.
SELECT s.n, maileroo_parse_event(s.body::jsonb) = maileroo_parse_event(s.body) AS same
FROM seed s ORDER BY s.n;

-- Stored, each lands in its type's partition (the two delivered payloads
-- share an event_id: the second is a duplicate).
INSERT INTO maileroo_events SELECT e.* FROM seed s, maileroo_parse_event(s.body) e
ON CONFLICT DO NOTHING;
SELECT tableoid::regclass, event_id FROM maileroo_events ORDER BY 1, 2;
TRUNCATE maileroo_events;

-- A helper showing the typed columns of one body.
CREATE FUNCTION pg_temp.ev(body text) RETURNS TABLE (
	event_type text, event_time timestamptz, inserted_at timestamptz,
	domain_id bigint, user_id bigint, message_id text, recipient text, ip inet,
	reason text, smtp_code int, smtp_status text, bounce_class text,
	tags jsonb, extra jsonb)
LANGUAGE sql AS $$
	SELECT event_type, event_time, inserted_at, domain_id, user_id, message_id,
		recipient, ip, reason, smtp_code, smtp_status, bounce_class, tags, extra
	FROM maileroo_parse_event(body)
$$;

-- Every documented type, an unknown one, and letter case: each lands in
-- its type's partition, unknown types in maileroo_events_other.
INSERT INTO maileroo_events
SELECT e.* FROM unnest(ARRAY['accepted', 'delivered', 'rejected', 'deferred', 'failed',
		'opened', 'clicked', 'complained', 'unsubscribed', 'Delivered', 'CLICKED']) AS t,
	maileroo_parse_event(format('{"event_id": "id-%s", "event_type": "%s", "event_time": 1}', t, t)) e;
SELECT event_id, event_type, tableoid::regclass FROM maileroo_events ORDER BY event_id COLLATE "C";
TRUNCATE maileroo_events;

-- tags: null, absent, {}, an object, and values that are not objects (kept
-- in extra).
SELECT label, tags, extra FROM (VALUES
	('null', '{"event_id": "a", "event_type": "opened", "event_time": 1, "tags": null}'),
	('absent', '{"event_id": "a", "event_type": "opened", "event_time": 1}'),
	('empty', '{"event_id": "a", "event_type": "opened", "event_time": 1, "tags": {}}'),
	('object', '{"event_id": "a", "event_type": "opened", "event_time": 1, "tags": {"b": "2", "a": ["x", 1]}}'),
	('array', '{"event_id": "a", "event_type": "opened", "event_time": 1, "tags": ["a", "b"]}'),
	('string', '{"event_id": "a", "event_type": "opened", "event_time": 1, "tags": "newsletter"}'),
	('number', '{"event_id": "a", "event_type": "opened", "event_time": 1, "tags": 7}')
) v(label, body), pg_temp.ev(body);

-- message_id with and without angle brackets.
SELECT label, message_id FROM (VALUES
	('brackets', '{"event_id": "a", "event_type": "opened", "event_time": 1, "message_id": "<x.1@mail.example.com>"}'),
	('bare', '{"event_id": "a", "event_type": "opened", "event_time": 1, "message_id": "x.1@mail.example.com"}'),
	('one bracket', '{"event_id": "a", "event_type": "opened", "event_time": 1, "message_id": "<x.1@mail.example.com"}'),
	('empty brackets', '{"event_id": "a", "event_type": "opened", "event_time": 1, "message_id": "<>"}'),
	('number', '{"event_id": "a", "event_type": "opened", "event_time": 1, "message_id": 42}')
) v(label, body), pg_temp.ev(body);

-- Recipients: "Name <addr>", a bare address, an array (the first one).
SELECT label, recipient FROM (VALUES
	('name and address', '{"event_id": "a", "event_type": "delivered", "event_time": 1, "event_data": {"to": "Jane Doe <jane@example.org>"}}'),
	('quoted name', '{"event_id": "a", "event_type": "delivered", "event_time": 1, "event_data": {"to": "\"Doe, Jane\" <jane@example.org>"}}'),
	('bare', '{"event_id": "a", "event_type": "delivered", "event_time": 1, "event_data": {"to": " jane@example.org "}}'),
	('array', '{"event_id": "a", "event_type": "rejected", "event_time": 1, "event_data": {"to": ["Bob <bob@example.org>", "jane@example.org"]}}'),
	('array, first not a string', '{"event_id": "a", "event_type": "rejected", "event_time": 1, "event_data": {"to": [{"x": 1}, "jane@example.org"]}}'),
	('empty array', '{"event_id": "a", "event_type": "rejected", "event_time": 1, "event_data": {"to": []}}'),
	('empty string', '{"event_id": "a", "event_type": "rejected", "event_time": 1, "event_data": {"to": ""}}'),
	('number', '{"event_id": "a", "event_type": "rejected", "event_time": 1, "event_data": {"to": 5}}')
) v(label, body), pg_temp.ev(body);

-- ip: IPv4, IPv6, and text that is not one address (NULL; event_data keeps it).
SELECT label, e.ip, (maileroo_parse_event(body)).event_data->'ip' AS raw FROM (VALUES
	('IPv4', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": {"ip": "103.120.6.123"}}'),
	('IPv6', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": {"ip": "2001:db8::8a2e:370:7334"}}'),
	('IPv4-mapped', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": {"ip": "::ffff:10.1.2.3"}}'),
	('not an address', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": {"ip": "999.1.1.1"}}'),
	('a network', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": {"ip": "10.0.0.0/8"}}'),
	('words', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": {"ip": "unknown"}}'),
	('empty', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": {"ip": ""}}'),
	('number', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": {"ip": 167772161}}')
) v(label, body), pg_temp.ev(body) e;

-- event_time: integer, fractional, exponent, numeric string, negative.
SELECT label, event_time FROM (VALUES
	('integer', '{"event_id": "a", "event_type": "opened", "event_time": 1710545577}'),
	('fraction', '{"event_id": "a", "event_type": "opened", "event_time": 1710545577.123456}'),
	('rounded', '{"event_id": "a", "event_type": "opened", "event_time": 1710545577.1234567}'),
	('exponent', '{"event_id": "a", "event_type": "opened", "event_time": 1.7105455775e9}'),
	('string', '{"event_id": "a", "event_type": "opened", "event_time": "1710545577"}'),
	('fractional string', '{"event_id": "a", "event_type": "opened", "event_time": " 1710545577.5 "}'),
	('zero', '{"event_id": "a", "event_type": "opened", "event_time": 0}'),
	('negative', '{"event_id": "a", "event_type": "opened", "event_time": -86400.25}')
) v(label, body), pg_temp.ev(body);

-- inserted_at: ISO 8601 forms; text that is not a time is NULL and kept in extra.
SELECT label, inserted_at, extra FROM (VALUES
	('milliseconds Z', '{"event_id": "a", "event_type": "opened", "event_time": 1, "inserted_at": "2024-03-15T23:32:57.401Z"}'),
	('offset', '{"event_id": "a", "event_type": "opened", "event_time": 1, "inserted_at": "2024-03-16T01:32:57+02:00"}'),
	('no zone is UTC', '{"event_id": "a", "event_type": "opened", "event_time": 1, "inserted_at": "2024-03-15 23:32:57.1234567"}'),
	('not a date', '{"event_id": "a", "event_type": "opened", "event_time": 1, "inserted_at": "2024-02-30T00:00:00Z"}'),
	('words', '{"event_id": "a", "event_type": "opened", "event_time": 1, "inserted_at": "yesterday"}'),
	('number', '{"event_id": "a", "event_type": "opened", "event_time": 1, "inserted_at": 1710545577}')
) v(label, body), pg_temp.ev(body);

-- domain_id and user_id: numbers or numeric strings; anything else is NULL
-- and kept in extra.
SELECT label, domain_id, user_id, extra FROM (VALUES
	('numbers', '{"event_id": "a", "event_type": "opened", "event_time": 1, "domain_id": 774, "user_id": 323}'),
	('strings', '{"event_id": "a", "event_type": "opened", "event_time": 1, "domain_id": "774", "user_id": "323"}'),
	('fraction', '{"event_id": "a", "event_type": "opened", "event_time": 1, "domain_id": 7.5, "user_id": null}'),
	('too big', '{"event_id": "a", "event_type": "opened", "event_time": 1, "domain_id": 99999999999999999999, "user_id": "x"}')
) v(label, body), pg_temp.ev(body);

-- Reasons: SMTP reply codes and enhanced status codes, or neither;
-- reject_reason when there is no reason.
SELECT label, reason, smtp_code, smtp_status, bounce_class FROM (VALUES
	('deferral', '{"event_id": "a", "event_type": "deferred", "event_time": 1, "event_data": {"reason": "452-4.2.2 The recipient''s inbox is out of storage space."}}'),
	('hard bounce', '{"event_id": "a", "event_type": "failed", "event_time": 1, "event_data": {"reason": "550 5.1.1 <jane@example.org>: Recipient address rejected: User unknown"}}'),
	('code only', '{"event_id": "a", "event_type": "failed", "event_time": 1, "event_data": {"reason": "554 Message rejected"}}'),
	('status only', '{"event_id": "a", "event_type": "failed", "event_time": 1, "event_data": {"reason": "smtp; 5.7.1 blocked by policy"}}'),
	('neither', '{"event_id": "a", "event_type": "failed", "event_time": 1, "event_data": {"reason": "Mailbox unavailable"}}'),
	('version number', '{"event_id": "a", "event_type": "failed", "event_time": 1, "event_data": {"reason": "Server v12.5.1.3 said no"}}'),
	('reject_reason', '{"event_id": "a", "event_type": "rejected", "event_time": 1, "event_data": {"to": ["a@example.org"], "from": "b@example.org", "reject_reason": "Recipient is suppressed"}}'),
	('both', '{"event_id": "a", "event_type": "rejected", "event_time": 1, "event_data": {"reason": "421 4.7.0 try later", "reject_reason": "other"}}')
) v(label, body), pg_temp.ev(body);

-- Unicode escapes (a surrogate pair too), escaped quotes and backslashes.
SELECT e.event_id, e.user_agent, e.url, e.event_data->>'user_agent' = e.user_agent AS same
FROM maileroo_parse_event($$ {"event_id": "\u00e9v\u00E9nement-\ud83d\ude00", "event_type": "clicked", "event_time": 1,
	"event_data": {"user_agent": "say \"hi\" \\ \/ \t\u0041", "original_url": "https:\/\/example.com\/a?b=\"c\""}} $$) e;

-- Duplicate keys: the last one wins, in the typed columns as in jsonb.
SELECT e.event_id, e.event_type, e.event_time, e.recipient, e.ip, e.domain_id, e.tags, e.event_data, e.extra
FROM maileroo_parse_event('{"event_id": "first", "event_type": "opened", "event_time": 1,
	"event_id": "second", "event_type": "clicked", "event_time": 2,
	"domain_id": "not a number", "domain_id": 5, "tags": {"a": 1}, "tags": null,
	"x": 1, "x": [2],
	"event_data": {"to": "a@example.org", "ip": "10.0.0.1"},
	"event_data": {"to": "b@example.org", "to": 7, "ip": "bad", "ip": "10.0.0.2"}}') e;
SELECT '{"a": 1, "a": 2}'::jsonb AS jsonb_also_keeps_the_last;

-- Keys written with escapes, and whitespace of every kind between tokens:
-- known keys are recognised and every key reads as jsonb reads it.
SELECT e.event_id, e.event_type, e.recipient, e.ip,
	e.event_data = b::jsonb->'event_data' AS event_data_as_jsonb,
	e.extra = b::jsonb - ARRAY['event_id', 'event_type', 'event_time', 'event_data'] AS extra_as_jsonb,
	e.extra
FROM (VALUES (E'{\n\t"event_\\u0069d"\r\n:\t"esc",  "event_type"  :  "opened" ,"event_time":1,\n'
	'"event_data":{ "t\\u006f" : "Jo <jo@example.org>",\t"ip":"10.0.0.9", "\\"q\\"" : 1, "" : 2 },'
	'"a\\\\":[ { "k\\"" :{"":[]} } ], "\\\\" : 3 ,"b\\u0022c":4}')) v(b),
	maileroo_parse_event(b) e;

-- Very long strings.
SELECT length(e.user_agent) AS user_agent_length, length(e.event_id) AS event_id_length,
	length(e.event_data->>'user_agent') AS in_event_data
FROM maileroo_parse_event(format('{"event_id": "%s", "event_type": "opened", "event_time": 1, "event_data": {"user_agent": "%s"}}',
	repeat('i', 10000), repeat('Mozilla/5.0 ', 100000))) e;

-- event_data absent, null, not an object; unknown top-level keys go to extra.
SELECT label, e.event_data, e.extra FROM (VALUES
	('absent', '{"event_id": "a", "event_type": "opened", "event_time": 1}'),
	('null', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": null}'),
	('array', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": [{"ip": "10.0.0.1"}]}'),
	('string', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": "x"}'),
	('unknown keys', '{"event_id": "a", "event_type": "opened", "event_time": 1, "campaign": {"id": 9, "n": [1, 2.50, true, null]}, "z": false, "a": "x"}')
) v(label, body), maileroo_parse_event(body) e;

-- Batches: one object, an array, {"events": [...]}.
SELECT count(*) FROM seed s, maileroo_parse_events(s.body);
SELECT event_id, event_type FROM maileroo_parse_events(
	(SELECT json_agg(body::json ORDER BY n)::text FROM seed));
SELECT event_id, event_type FROM maileroo_parse_events(
	(SELECT json_build_object('events', json_agg(body::json ORDER BY n DESC))::text FROM seed WHERE n <= 2));
SELECT count(*) FROM maileroo_parse_events('[]');
SELECT count(*) FROM maileroo_parse_events('{"events": []}');
-- An event that happens to carry an "events" key is still one event.
SELECT event_id, extra FROM maileroo_parse_events('{"event_id": "a", "event_type": "opened", "event_time": 1, "events": [1]}');
SELECT * FROM maileroo_event_bodies('[{"event_id": "a"} , 2, [3],"x"]');
SELECT * FROM maileroo_event_bodies('{"x": 1, "events": [{"a": 1}], "events": [{"b": 2}, {"c": 3}]}');

-- Usable in the documented INSERT form, with idempotency.
INSERT INTO maileroo_events SELECT e.* FROM seed s, maileroo_parse_events(s.body) e ON CONFLICT DO NOTHING;
INSERT INTO maileroo_events SELECT e.* FROM seed s, maileroo_parse_events(s.body) e ON CONFLICT DO NOTHING;
SELECT count(*) FROM maileroo_events;

-- The parsers are pure enough for everyone; the tables are not.
SELECT p.oid::regprocedure AS function, p.provolatile, p.proparallel, p.proisstrict,
	has_function_privilege('public', p.oid, 'EXECUTE') AS public_can_execute
FROM pg_proc p WHERE p.proname IN ('maileroo_parse_event', 'maileroo_parse_events',
	'maileroo_event_bodies', 'maileroo_verify_signature', 'maileroo_ingest', 'maileroo_ingest_authenticate')
ORDER BY p.oid::regprocedure::text COLLATE "C";

DROP EXTENSION maileroo;
