-- Suppressions: manual entries, and the entries that hard bounces,
-- complaints and rejections add as their events are stored.
CREATE EXTENSION maileroo;
-- The outbox rows written below as fixtures belong to one sending account.
ALTER TABLE maileroo_outbox ALTER account SET DEFAULT 'shop';
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';

-- By hand.  Addresses compare case-insensitively; "Name <address>" is
-- accepted and stored as the bare address.
SELECT maileroo_suppress('Jane Doe <Jane.Doe@Example.com>', 'asked by phone') AS added;
SELECT maileroo_suppress('jane.doe@example.com') AS added_again;
SELECT maileroo_is_suppressed('JANE.DOE@example.com') AS jane,
	   maileroo_is_suppressed('john@example.com') AS john;
SELECT address, reason, event_id, event_type, note FROM maileroo_suppressions;
SELECT maileroo_suppress('not an address');
SELECT maileroo_suppress('a@b.com, c@d.com');
SELECT maileroo_unsuppress('jane.doe@EXAMPLE.com') AS removed;
SELECT maileroo_unsuppress('jane.doe@example.com') AS removed_again;

-- From events.  Outbox rows for the fallback used when an event names no
-- recipient.
INSERT INTO maileroo_outbox (reference_id, endpoint, request, status, attempts, created_at, sent_at)
VALUES ('a00000000000000000000001', '/emails',
		'{"from": {"address": "shop@example.com"}, "to": [{"address": "Solo@Example.org"}], "subject": "One"}',
		'sent', 1, '2026-03-02 09:00', '2026-03-02 09:00:01'),
	   ('a00000000000000000000002', '/emails',
		'{"from": {"address": "shop@example.com"}, "to": [{"address": "x@example.org"}], "cc": {"address": "y@example.org"}, "subject": "Two"}',
		'sent', 1, '2026-03-02 09:00', '2026-03-02 09:00:01');

INSERT INTO maileroo_events (event_id, event_type, event_time, message_reference_id,
							 recipient, reason, bounce_class, event_data)
VALUES
	-- a hard bounce suppresses
	('f1', 'failed', '2026-03-02 10:00', 'r1', 'carol@example.org', '550 5.1.1 User unknown', 'hard', '{"to": "carol@example.org"}'),
	-- a soft bounce, a failure without a reply code and a deferral do not
	('f2', 'failed', '2026-03-02 10:00', 'r2', 'frank@example.org', '452 4.2.2 Mailbox full', 'soft', '{"to": "frank@example.org"}'),
	('f3', 'failed', '2026-03-02 10:00', 'r3', 'grace@example.org', 'Connection timed out', NULL, '{"to": "grace@example.org"}'),
	('d1', 'deferred', '2026-03-02 10:00', 'r4', 'heidi@example.org', '421 4.7.0 Try again later', 'soft', '{"to": "heidi@example.org"}'),
	-- a complaint suppresses, with or without a recipient in the event
	('c1', 'complained', '2026-03-02 11:00', 'r5', 'dave@example.org', NULL, NULL, '{}'),
	('c2', 'complained', '2026-03-02 11:00', 'a00000000000000000000001', NULL, NULL, NULL, '{}'),
	-- ... but not when the message had several recipients and the event
	-- does not say which one complained
	('c3', 'complained', '2026-03-02 11:00', 'a00000000000000000000002', NULL, NULL, NULL, '{}'),
	-- a rejection suppresses every address it lists
	('r1', 'rejected', '2026-03-02 12:00', 'r6', 'ivan@example.org', 'Recipient is on a block list', NULL,
	 '{"to": ["ivan@example.org", "Judy <judy@example.org>"], "from": "shop@example.com"}'),
	-- delivered and opened events pay nothing
	('o1', 'opened', '2026-03-02 12:00', 'r7', 'kim@example.org', NULL, NULL, '{}');
SELECT address, reason, event_id, event_type FROM maileroo_suppressions ORDER BY lower(address);

-- A repeated delivery of the same event, and a later bounce of an address
-- already suppressed, change nothing: the first cause is kept.
INSERT INTO maileroo_events (event_id, event_type, event_time, recipient, bounce_class, event_data)
VALUES ('f1', 'failed', '2026-03-02 10:00', 'carol@example.org', 'hard', '{}'),
	   ('f4', 'failed', '2026-03-05 10:00', 'CAROL@example.org', 'hard', '{}')
ON CONFLICT DO NOTHING;
SELECT address, reason, event_id FROM maileroo_suppressions WHERE lower(address) = 'carol@example.org';

-- One statement-level trigger on the parent, and the same on the three
-- partitions concerned for inserts made into them directly.
SELECT tgrelid::regclass AS partition, tgname
  FROM pg_trigger WHERE tgname LIKE 'maileroo%' ORDER BY 1::text;

-- A role that was granted nothing cannot read or change the list; the
-- address helpers are pure and open to everyone.
CREATE ROLE maileroo_analytics_nobody;
SET ROLE maileroo_analytics_nobody;
SELECT maileroo_suppress('x@example.org');
SELECT maileroo_is_suppressed('x@example.org');
SELECT count(*) FROM maileroo_suppressions;
SELECT maileroo_address_part('  Jane <jane@example.com> ') AS address,
	   maileroo_address_part('no address') AS none,
	   maileroo_request_recipients('{"to": [{"address": "a@x.org"}, "b@x.org"], "cc": {"address": "c@x.org"}, "bcc": []}') AS recipients;
RESET ROLE;
-- Granted the functions, it manages the list without any table privilege.
GRANT EXECUTE ON FUNCTION maileroo_suppress(text, text), maileroo_unsuppress(text),
	maileroo_is_suppressed(text) TO maileroo_analytics_nobody;
SET ROLE maileroo_analytics_nobody;
SELECT maileroo_suppress('x@example.org', 'from the support desk') AS added;
SELECT maileroo_is_suppressed('X@example.org') AS suppressed;
SELECT maileroo_unsuppress('x@example.org') AS removed;
RESET ROLE;
REVOKE ALL ON FUNCTION maileroo_suppress(text, text), maileroo_unsuppress(text),
	maileroo_is_suppressed(text) FROM maileroo_analytics_nobody;
DROP ROLE maileroo_analytics_nobody;

-- An insert made straight into a partition suppresses too; in one batch,
-- the earliest event names the reason and a soft bounce suppresses nothing.
INSERT INTO maileroo_events_complained (event_id, event_type, event_time, recipient, event_data)
VALUES ('direct-1', 'complained', '2024-03-16 10:00+00', 'Direct.Partition@example.com', '{}');
INSERT INTO maileroo_events (event_id, event_type, event_time, recipient, reason, bounce_class, event_data) VALUES
	('batch-2', 'complained', '2024-03-16 11:00+00', 'batch@example.com', NULL, NULL, '{}'),
	('batch-1', 'failed', '2024-03-16 10:00+00', 'Batch@example.com', '550 5.1.1 unknown', 'hard', '{}'),
	('batch-3', 'failed', '2024-03-16 10:00+00', 'soft@example.com', '452 4.2.2 full', 'soft', '{}');
SELECT address, reason, event_id, event_type FROM maileroo_suppressions
 WHERE event_id IN ('direct-1', 'batch-1', 'batch-2', 'batch-3') ORDER BY event_id;

-- pg_dump keeps the list with the extension.
SELECT 'maileroo_suppressions'::regclass = ANY (extconfig) AS dumped
  FROM pg_extension WHERE extname = 'maileroo';

DROP EXTENSION maileroo;
