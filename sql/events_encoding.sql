-- Webhook bodies in databases whose encoding is not UTF-8: a \u escape the
-- encoding can hold is stored as that character, and one it cannot hold is
-- refused with the same SQLSTATE and message by every entry point, on every
-- PostgreSQL version (the lexer reports these differently from 16 on).
CREATE DATABASE maileroo_latin1 TEMPLATE template0 ENCODING 'LATIN1'
	LC_COLLATE 'C' LC_CTYPE 'C';
CREATE DATABASE maileroo_ascii TEMPLATE template0 ENCODING 'SQL_ASCII'
	LC_COLLATE 'C' LC_CTYPE 'C';

-- LATIN1: U+4E16 has no equivalent (22P05), U+00E9 has one.
\c maileroo_latin1
SET client_encoding = 'UTF8';
CREATE EXTENSION maileroo;
-- try(f, body): 'ok', or the SQLSTATE and message of the error.
CREATE FUNCTION pg_temp.try(f text, body text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('SELECT count(*) FROM %s($1)', f) USING body;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
SELECT f, label, pg_temp.try(f, body) FROM (VALUES
	('event_id', '{"event_id": "a\u4e16", "event_type": "opened", "event_time": 1}'),
	('event_data', '{"event_id": "a", "event_type": "opened", "event_time": 1, "event_data": {"ua": "\u4e16"}}'),
	('pair', '{"event_id": "a\ud83d\ude00", "event_type": "opened", "event_time": 1}'),
	('batch', '[{"event_id": "a", "event_type": "opened", "event_time": 1}, {"event_id": "b\u4e16", "event_type": "opened", "event_time": 1}]')
) v(label, body), unnest(ARRAY['maileroo_parse_event', 'maileroo_parse_events', 'maileroo_ingest']) f
WHERE f <> 'maileroo_parse_event' OR label <> 'batch'
ORDER BY 1, 2;
SELECT count(*) AS stored FROM maileroo_events;
SELECT f, event_id, event_id = 'é' AS is_e_acute, convert_to(event_id, 'LATIN1') AS latin1
FROM unnest(ARRAY['maileroo_parse_event', 'maileroo_parse_events']) f,
	LATERAL (SELECT (CASE f WHEN 'maileroo_parse_event' THEN maileroo_parse_event(b)
		ELSE (SELECT e FROM maileroo_parse_events(b) e) END).event_id
		FROM (VALUES ('{"event_id": "\u00e9", "event_type": "opened", "event_time": 1}'::text)) v(b)) p
ORDER BY 1;
SELECT maileroo_ingest('{"event_id": "\u00e9", "event_type": "opened", "event_time": 1}') AS new_events;
SELECT event_id = 'é' AS is_e_acute FROM maileroo_events;

-- SQL_ASCII: no conversion from UTF-8 exists for anything beyond ASCII.
\c maileroo_ascii
CREATE EXTENSION maileroo;
CREATE FUNCTION pg_temp.try(f text, body text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('SELECT count(*) FROM %s($1)', f) USING body;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
SELECT f, label, pg_temp.try(f, body) FROM (VALUES
	('event_id', '{"event_id": "\u00e9", "event_type": "opened", "event_time": 1}'),
	('ascii escape', '{"event_id": "\u0041", "event_type": "opened", "event_time": 1}')
) v(label, body), unnest(ARRAY['maileroo_parse_event', 'maileroo_parse_events', 'maileroo_ingest']) f
ORDER BY 1, 2;
SELECT event_id FROM maileroo_events;

\c contrib_regression
DROP DATABASE maileroo_latin1;
DROP DATABASE maileroo_ascii;
