-- Webhook events: bad input is an ERROR of SQLSTATE class 22 whose message
-- names the field; an optional field that cannot be typed never rejects
-- the event.
CREATE EXTENSION maileroo;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

-- try(body): 'ok', or the SQLSTATE and message of the error.
CREATE FUNCTION pg_temp.try(body text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	PERFORM maileroo_parse_event(body);
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

-- Not JSON, truncated JSON, an empty body.
SELECT label, pg_temp.try(body) FROM (VALUES
	('not JSON', 'hello'),
	('HTML', '<html><body>502 Bad Gateway</body></html>'),
	('truncated', '{"event_id": "a", "event_type": "opened", "event_ti'),
	('truncated string', '{"event_id": "a'),
	('trailing garbage', '{"event_id": "a", "event_type": "opened", "event_time": 1} x'),
	('single quotes', '{''event_id'': ''a''}'),
	('empty', ''),
	('blank', E' \n\t '),
	('bad escape', '{"event_id": "\x", "event_type": "opened", "event_time": 1}'),
	('NUL escape', '{"event_id": "a\u0000b", "event_type": "opened", "event_time": 1}'),
	('NUL escape in event_data', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": {"ua": "\u0000"}}'),
	('lone high surrogate', '{"event_id": "\ud83d", "event_type": "opened", "event_time": 1}'),
	('lone low surrogate', '{"event_id": "\ude00", "event_type": "opened", "event_time": 1}')
) v(label, body);

-- The whole message, with its detail.
SELECT maileroo_parse_event('{"event_id": "a", "event_type": "opened", "event_ti');
SELECT maileroo_parse_event('{"event_id": "a\u0000b"}');
SELECT maileroo_parse_event('');

-- A top-level scalar or array (for the single form).
SELECT label, pg_temp.try(body) FROM (VALUES
	('number', '42'),
	('string', '"event"'),
	('null', 'null'),
	('true', 'true'),
	('array', '[{"event_id": "a", "event_type": "opened", "event_time": 1}]')
) v(label, body);
SELECT maileroo_parse_event('[]');

-- Each required field missing, null or of the wrong type.
SELECT label, pg_temp.try(body) FROM (VALUES
	('no event_id', '{"event_type": "opened", "event_time": 1}'),
	('no event_type', '{"event_id": "a", "event_time": 1}'),
	('no event_time', '{"event_id": "a", "event_type": "opened"}'),
	('empty object', '{}'),
	('event_id null', '{"event_id": null, "event_type": "opened", "event_time": 1}'),
	('event_type null', '{"event_id": "a", "event_type": null, "event_time": 1}'),
	('event_time null', '{"event_id": "a", "event_type": "opened", "event_time": null}'),
	('event_id number', '{"event_id": 12, "event_type": "opened", "event_time": 1}'),
	('event_id object', '{"event_id": {"a": 1}, "event_type": "opened", "event_time": 1}'),
	('event_id empty', '{"event_id": "", "event_type": "opened", "event_time": 1}'),
	('event_type boolean', '{"event_id": "a", "event_type": true, "event_time": 1}'),
	('event_type array', '{"event_id": "a", "event_type": ["opened"], "event_time": 1}'),
	('event_type empty', '{"event_id": "a", "event_type": "", "event_time": 1}'),
	('event_time text', '{"event_id": "a", "event_type": "opened", "event_time": "yesterday"}'),
	('event_time ISO text', '{"event_id": "a", "event_type": "opened", "event_time": "2024-03-15T23:32:57Z"}'),
	('event_time boolean', '{"event_id": "a", "event_type": "opened", "event_time": false}'),
	('event_time object', '{"event_id": "a", "event_type": "opened", "event_time": {"s": 1}}'),
	('event_time huge', '{"event_id": "a", "event_type": "opened", "event_time": 1e300}'),
	('event_time huge string', '{"event_id": "a", "event_type": "opened", "event_time": "99999999999999"}'),
	('event_time tiny', '{"event_id": "a", "event_type": "opened", "event_time": 1e-300}'),
	('right type after wrong', '{"event_id": 1, "event_id": "a", "event_type": "opened", "event_time": 1}'),
	('wrong type after right', '{"event_id": "a", "event_id": 1, "event_type": "opened", "event_time": 1}')
) v(label, body);

-- The whole messages.
SELECT maileroo_parse_event('{"event_type": "opened", "event_time": 1}');
SELECT maileroo_parse_event('{"event_id": "a", "event_type": "opened", "event_time": "yesterday"}');
SELECT maileroo_parse_event('{"event_id": "a", "event_type": "opened", "event_time": 1e300}');

-- Deep nesting: refused past 200 levels with a class-22 error, long before
-- the server's stack limit, wherever it is.
SELECT label, pg_temp.try(body) FROM (VALUES
	('200 levels', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": '
		|| repeat('[', 199) || repeat(']', 199) || '}'),
	('201 levels', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": '
		|| repeat('[', 200) || repeat(']', 200) || '}'),
	('100000 levels in an unknown key', '{"x": ' || repeat('{"a": ', 100000) || '1' || repeat('}', 100000) || '}'),
	('100000 unclosed arrays', '{"x": ' || repeat('[', 100000)),
	('100000 levels in event_id', '{"event_id": ' || repeat('[', 100000) || repeat(']', 100000) || '}')
) v(label, body);
SELECT maileroo_parse_event('{"event_id": "a", "event_type": "opened", "event_time": 1, "tags": ' || repeat('[', 300) || repeat(']', 300) || '}');
SELECT count(*) FROM maileroo_parse_events(repeat('[', 300) || repeat(']', 300));

-- A number jsonb cannot hold, in event_data.
SELECT maileroo_parse_event('{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": {"n": 1e1000000}}');

-- Optional fields that cannot be typed never reject the event.
SELECT e.event_id, e.inserted_at, e.domain_id, e.user_id, e.message_id,
	e.message_reference_id, e.recipient, e.ip, e.user_agent, e.url, e.reason, e.tags,
	e.event_data, e.extra
FROM maileroo_parse_event('{"event_id": "a", "event_type": "opened", "event_time": 1,
	"inserted_at": "soon", "domain_id": "x", "user_id": [1], "message_id": {"id": 1},
	"message_reference_id": 12, "tags": "t",
	"event_data": {"to": {"a": 1}, "ip": "1.2.3", "user_agent": 5, "original_url": false, "reason": ["550"]}}') e;

-- The batch form: an element that is not an event names its position.
SELECT * FROM maileroo_parse_events('[{"event_id": "a", "event_type": "opened", "event_time": 1}, {"event_id": "b"}]');
SELECT * FROM maileroo_parse_events('[{"event_id": "a", "event_type": "opened", "event_time": 1}, 7]');
SELECT * FROM maileroo_parse_events('"x"');
SELECT * FROM maileroo_parse_events('[1, 2');
SELECT * FROM maileroo_event_bodies('{"events": [1, 2]');

-- Every error above is of class 22, never an internal error.
SELECT DISTINCT left(pg_temp.try(body), 5) AS sqlstate FROM (VALUES
	('hello'), ('{'), ('[]'), ('42'), ('{}'), ('{"event_id": null}'), ('{"event_id": 1}'),
	('{"event_id": "a", "event_type": "x", "event_time": "y"}'),
	('{"event_id": "a", "event_type": "x", "event_time": 1e99}'),
	('{"a": "\u0000"}'), (repeat('[', 5000))
) v(body) ORDER BY 1;

DROP EXTENSION maileroo;
