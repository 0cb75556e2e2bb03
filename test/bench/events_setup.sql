-- test/bench/events_setup.sql: the data of the webhook benchmarks.
--
--   psql -v rows=N -f test/bench/events_setup.sql
--
-- Creates the extension, N realistic webhook bodies in raw (every
-- documented event type in equal shares, with tags, IPv4 and IPv6
-- addresses, bounce reasons), the same rows already typed in typed, and two
-- empty tables identical to maileroo_events (floor_events, lateral_events).
CREATE EXTENSION maileroo;
CREATE TABLE raw AS
SELECT format('{"domain_id": %s, "event_data": %s, "event_id": "%s", "event_time": %s, "event_type": "%s", "inserted_at": "%s", "message_id": "<%s@mail.example.com>", "message_reference_id": "%s", "tags": %s, "user_id": %s}',
	100 + i % 50,
	CASE i % 8
		WHEN 0 THEN format('{"ip": "%s.%s.%s.%s", "original_url": "https://shop.example.com/p/%s?utm_source=mail&utm_campaign=spring", "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36 Edg/122.0.0.0"}',
			1 + i % 223, (i / 7) % 256, (i / 11) % 256, i % 254 + 1, i)
		WHEN 1 THEN format('{"ip": "2001:db8:%s::%s", "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"}',
			to_hex(i % 65536), to_hex((i * 7) % 65536))
		WHEN 2 THEN format('{"to": "customer%s@example.org"}', i)
		WHEN 3 THEN format('{"reason": "452-4.2.2 The recipient''s inbox is out of storage space. Please direct the recipient to support link.", "to": "customer%s@example.org"}', i)
		WHEN 4 THEN format('{"reason": "550 5.1.1 <customer%s@example.org>: Recipient address rejected: User unknown in virtual mailbox table", "to": "Customer %s <customer%s@example.org>"}', i, i, i)
		WHEN 5 THEN format('{"from": "shop@example.com", "reject_reason": "Recipient is on the suppression list", "to": ["customer%s@example.org"]}', i)
		WHEN 6 THEN format('{"to": "customer%s@example.org"}', i)
		ELSE '{}' END,
	md5(i::text) || left(md5((i + 1)::text), 16),
	1710545577 + i,
	(ARRAY['clicked', 'opened', 'delivered', 'deferred', 'failed', 'rejected', 'accepted', 'complained'])[i % 8 + 1],
	to_char(to_timestamp(1710545577 + i) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '.' || lpad((i % 1000)::text, 3, '0') || 'Z',
	md5((i * 7)::text),
	left(md5((i * 3)::text), 24),
	CASE WHEN i % 3 = 0 THEN '{"campaign": "spring-sale", "segment": "returning"}' ELSE 'null' END,
	300 + i % 20) AS body
FROM generate_series(1, :rows) i;

-- The same rows already typed, and an empty table identical to maileroo_events.
CREATE TABLE typed AS SELECT e.* FROM raw, LATERAL maileroo_parse_event(body) e;
DO $$
DECLARE t text; f text;
BEGIN
	FOREACH f IN ARRAY ARRAY['floor_events', 'lateral_events'] LOOP
		EXECUTE format('CREATE TABLE %I (LIKE maileroo_events INCLUDING ALL) PARTITION BY LIST (event_type)', f);
		FOREACH t IN ARRAY ARRAY['accepted', 'delivered', 'rejected', 'deferred', 'failed', 'opened', 'clicked', 'complained'] LOOP
			EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES IN (%L)', f || '_' || t, f, t);
		END LOOP;
		EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', f || '_other', f);
		-- Identical includes the suppression trigger maileroo_events carries.
		EXECUTE format('CREATE TRIGGER maileroo_suppress AFTER INSERT ON %I REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION maileroo_events_suppress()', f);
	END LOOP;
END
$$;
VACUUM ANALYZE raw;
VACUUM ANALYZE typed;
