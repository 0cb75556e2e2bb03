-- Campaigns: what maileroo_send_campaign queues, the bulk requests that
-- carry it, what is left out and why, and what is refused.  Everything runs
-- in transactions that roll back, so nothing is delivered and the output
-- does not depend on the worker.
CREATE EXTENSION maileroo;
SET TimeZone = 'UTC';
-- The sending account: the mock Maileroo server the test run started.
DO $$ BEGIN EXECUTE format('CREATE SERVER mock FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url %L)',
                           current_setting('maileroo_test.mock_url')); END $$;
CREATE USER MAPPING FOR PUBLIC SERVER mock OPTIONS (api_key 'test-key');

-- Reference ids are random: show them as <ref>, after checking their form.
CREATE FUNCTION pg_temp.masked(body json) RETURNS text LANGUAGE sql AS $$
	SELECT regexp_replace(body::text, '"reference_id":"[0-9a-f]{24}"', '"reference_id":"<ref>"', 'g')
$$;

-- One recipient: one outbox row holding its entry of "messages", the
-- shared content once in maileroo_campaigns, and one request.
BEGIN;
SELECT * FROM maileroo_send_campaign('Shop <shop@example.com>', 'Spring sale',
	template_id => 42,
	recipients => ARRAY['Jane Doe <jane@example.org>'],
	template_data => '{"first_name": "Jane"}',
	name => 'spring');
SELECT name, content, messages, suppressed, duplicates, queued_by, account FROM maileroo_campaigns;
SELECT endpoint, status, priority, attempts, o.account, campaign_id = c.id AS in_campaign,
	   request ->> 'reference_id' = reference_id AS own_reference_id,
	   pg_temp.masked(request) AS request
  FROM maileroo_outbox o, maileroo_campaigns c;
SELECT request, messages, reference_ids = ARRAY(SELECT reference_id FROM maileroo_outbox) AS same_ids,
	   pg_temp.masked(body) AS body
  FROM maileroo_campaign_requests('spring');
-- The same campaign by id; a second campaign may not take its name.
SELECT count(*) AS requests FROM maileroo_campaign_requests((SELECT id FROM maileroo_campaigns));
SAVEPOINT s;
SELECT * FROM maileroo_send_campaign('shop@example.com', 'Again', plain => 'hi',
	recipients => ARRAY['kim@example.org'], name => 'spring');
ROLLBACK TO s;
ROLLBACK;

-- Every shared field, and per-recipient template data merged over the
-- shared one (recipient_data[i] belongs to recipients[i]; NULL: none).
BEGIN;
SELECT queued FROM maileroo_send_campaign(
	sender => 'Shop <shop@example.com>',
	subject => 'Your picks — this week',
	recipients => ARRAY['a@example.org', '"Doe, Bo" <bo@example.org>', 'cy@example.org'],
	template_id => 7,
	template_data => '{"shop": "North", "greeting": "Hello"}',
	recipient_data => ARRAY['{"greeting": "Hi", "first_name": "Al"}', NULL,
							'{"items": [1, 2]}']::jsonb[],
	reply_to => 'Support <support@example.com>',
	tags => '{"campaign": "picks", "week": 12}',
	headers => '{"List-Unsubscribe": "<mailto:u@example.com>"}',
	attachments => ARRAY[maileroo_attachment('a.txt', 'hello'::bytea, 'text/plain')],
	tracking => true,
	name => 'picks');
SELECT pg_temp.masked(body) AS body FROM maileroo_campaign_requests('picks');
ROLLBACK;

-- Content of its own: html and plain, no template.
BEGIN;
SELECT queued FROM maileroo_send_campaign('shop@example.com', 'News', html => '<p>News</p>',
	plain => 'News', recipients => ARRAY['a@example.org'], name => 'news');
SELECT pg_temp.masked(body) AS body FROM maileroo_campaign_requests('news');
ROLLBACK;

-- 500 recipients make one request and 501 two (500 + 1), each message with
-- its own data and reference id, in the order of recipients.  The bodies
-- are compared with bodies written here independently.
BEGIN;
SELECT a.queued, b.queued FROM (SELECT array_agg('u' || i || '@example.org' ORDER BY i) AS r,
						   array_agg(jsonb_build_object('i', i) ORDER BY i) AS d
					  FROM generate_series(1, 501) i) AS u,
	 maileroo_send_campaign('shop@example.com', 'Hi', template_id => 9,
							recipients => u.r[1:500], recipient_data => u.d[1:500], name => 'five hundred') AS a,
	 maileroo_send_campaign('shop@example.com', 'Hi', template_id => 9,
							recipients => u.r, recipient_data => u.d, name => 'five hundred and one') AS b;
CREATE TEMP VIEW expected AS
SELECT n, request, count(*) AS messages,
	   '{"subject":"Hi","template_id":9,"messages":['
	   || string_agg('{"from":{"address":"shop@example.com"},"to":[{"address":"u' || i
					 || '@example.org"}],"reference_id":"<ref>","template_data":{"i": ' || i || '}}',
					 ',' ORDER BY i)
	   || ']}' AS body
  FROM (VALUES (500), (501)) AS c(n), generate_series(1, n) AS i,
	   LATERAL (SELECT (i - 1) / 500 + 1 AS request) AS r
 GROUP BY n, request;
SELECT c.messages AS campaign, r.request, r.messages,
	   pg_temp.masked(r.body) = e.body AS body_as_expected,
	   length(r.body::text) AS bytes,
	   r.reference_ids = ARRAY(SELECT m ->> 'reference_id'
								 FROM json_array_elements(r.body -> 'messages') AS m) AS ids_in_order,
	   (SELECT count(*) FROM maileroo_outbox o
		 WHERE o.campaign_id = c.id AND o.reference_id = ANY (r.reference_ids)) AS rows
  FROM maileroo_campaigns c, maileroo_campaign_requests(c.id) r, expected e
 WHERE e.n = c.messages AND e.request = r.request
 ORDER BY c.messages, r.request;
ROLLBACK;

-- Suppressed recipients and repeated addresses are left out and counted;
-- the rest are queued.  ignore_suppressions sends to everyone.
BEGIN;
SELECT maileroo_suppress('Gone@Example.org', 'hard bounce') AS added;
SELECT * FROM maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi',
	recipients => ARRAY['a@example.org', 'gone@example.org', 'A@Example.org', 'b@example.org'],
	name => 'filtered');
SELECT request -> 'to' -> 0 ->> 'address' AS queued_to FROM maileroo_outbox ORDER BY 1;
SELECT name, messages, suppressed, duplicates FROM maileroo_campaigns;
SELECT queued, suppressed, duplicates FROM maileroo_send_campaign('shop@example.com', 'Hi',
	plain => 'hi', recipients => ARRAY['gone@example.org'], ignore_suppressions => true);
-- Every recipient suppressed: the campaign exists and queues nothing.
SELECT queued, suppressed FROM maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi',
	recipients => ARRAY['GONE@example.org'], name => 'nobody');
SELECT count(*) AS requests FROM maileroo_campaign_requests('nobody');
ROLLBACK;

-- The summary, one row per campaign, and cancelling: what is not sent yet
-- is cancelled; what was sent, or is being sent, stays.
BEGIN;
SELECT queued FROM maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi',
	recipients => ARRAY['a@example.org', 'b@example.org', 'c@example.org', 'd@example.org'],
	name => 'summer');
-- As if the worker had sent two, one of them delivered, opened and clicked.
UPDATE maileroo_outbox SET status = 'sent', sent_at = now()
 WHERE request -> 'to' -> 0 ->> 'address' IN ('a@example.org', 'b@example.org');
UPDATE maileroo_outbox SET status = 'sending'
 WHERE request -> 'to' -> 0 ->> 'address' = 'c@example.org';
INSERT INTO maileroo_events (event_id, event_type, event_time, message_reference_id, event_data)
SELECT 'ev-' || t, t, now(), o.reference_id, '{}'
  FROM maileroo_outbox o, unnest(ARRAY['delivered', 'opened', 'clicked']) AS t
 WHERE o.request -> 'to' -> 0 ->> 'address' = 'a@example.org';
INSERT INTO maileroo_events (event_id, event_type, event_time, message_reference_id, event_data)
SELECT 'ev-failed', 'failed', now(), o.reference_id, '{}'
  FROM maileroo_outbox o WHERE o.request -> 'to' -> 0 ->> 'address' = 'b@example.org';
SELECT name, messages, suppressed, duplicates, waiting, sent, failed, cancelled,
	   delivered, opened, clicked, bounced
  FROM maileroo_campaign_summary WHERE name = 'summer';
SELECT maileroo_cancel_campaign('summer') AS cancelled,
	   maileroo_cancel_campaign('summer') AS again;
SELECT request -> 'to' -> 0 ->> 'address' AS recipient, status, last_error
  FROM maileroo_outbox ORDER BY 1;
SELECT waiting, sent, cancelled FROM maileroo_campaign_summary WHERE name = 'summer';
ROLLBACK;
SELECT maileroo_cancel_campaign('winter');
SELECT maileroo_cancel_campaign(-1);

-- Invalid input is refused before anything is written, naming what is
-- wrong: an address by its position among the recipients.
SELECT maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi',
	recipients => ARRAY['a@example.org', 'b@example.org', 'c@example', 'd@example.org']);
SELECT maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi',
	recipients => (SELECT array_agg(CASE WHEN i = 99999 THEN 'bad address' ELSE 'u' || i || '@example.org' END)
					 FROM generate_series(1, 100000) i));
SELECT maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi',
	recipients => ARRAY['a@example.org', NULL]);
SELECT maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi',
	recipients => ARRAY['a@example.org, b@example.org']);
SELECT maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi', recipients => '{}');
SELECT maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi', recipients => NULL);
SELECT maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi',
	recipients => ARRAY[['a@example.org'], ['b@example.org']]);
SELECT maileroo_send_campaign('not an address', 'Hi', plain => 'hi', recipients => ARRAY['a@example.org']);
SELECT maileroo_send_campaign('shop@example.com', repeat('x', 256), plain => 'hi', recipients => ARRAY['a@example.org']);
SELECT maileroo_send_campaign('shop@example.com', 'Hi', recipients => ARRAY['a@example.org']);
SELECT maileroo_send_campaign('shop@example.com', 'Hi', html => '<p>hi</p>', template_id => 3,
	recipients => ARRAY['a@example.org']);
SELECT maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi', template_data => '{}',
	recipients => ARRAY['a@example.org']);
SELECT maileroo_send_campaign('shop@example.com', 'Hi', template_id => 0, recipients => ARRAY['a@example.org']);
SELECT maileroo_send_campaign('shop@example.com', 'Hi', template_id => 3, template_data => '[1]',
	recipients => ARRAY['a@example.org']);
SELECT maileroo_send_campaign('shop@example.com', 'Hi', template_id => 3,
	recipients => ARRAY['a@example.org', 'b@example.org'], recipient_data => ARRAY['{}']::jsonb[]);
SELECT maileroo_send_campaign('shop@example.com', 'Hi', template_id => 3,
	recipients => ARRAY['a@example.org', 'b@example.org'], recipient_data => ARRAY['{}', '"Bob"']::jsonb[]);
SELECT maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi', tags => '{"k": [1]}',
	recipients => ARRAY['a@example.org']);
SELECT maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi', name => '',
	recipients => ARRAY['a@example.org']);
SELECT maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi', account => 'nope',
	recipients => ARRAY['a@example.org']);
SELECT count(*) AS campaigns FROM maileroo_campaigns;
SELECT count(*) AS queued FROM maileroo_outbox;

-- Roles: queueing needs EXECUTE but no privilege on the tables; a role may
-- cancel and review only its own campaigns.
CREATE ROLE regress_campaign_alice;
CREATE ROLE regress_campaign_bob;
GRANT EXECUTE ON FUNCTION maileroo_send_campaign(text, text, text[], text, text, bigint, jsonb, jsonb[], text, text, jsonb, jsonb, maileroo_attachment[], boolean, boolean, text),
	maileroo_cancel_campaign(text), maileroo_campaign_requests(text)
	TO regress_campaign_alice, regress_campaign_bob;
GRANT USAGE ON FOREIGN SERVER mock TO regress_campaign_alice, regress_campaign_bob;
BEGIN;
SET LOCAL ROLE regress_campaign_alice;
SELECT queued FROM maileroo_send_campaign('shop@example.com', 'Hi', plain => 'hi',
	recipients => ARRAY['a@example.org'], name => 'alice''s');
SELECT count(*) AS requests FROM maileroo_campaign_requests('alice''s');
SET LOCAL ROLE regress_campaign_bob;
SAVEPOINT b;
SELECT maileroo_cancel_campaign('alice''s');
ROLLBACK TO b;
SELECT * FROM maileroo_campaign_requests('alice''s');
ROLLBACK TO b;
SELECT * FROM maileroo_campaigns;
ROLLBACK TO b;
SET LOCAL ROLE regress_campaign_alice;
SELECT maileroo_cancel_campaign('alice''s') AS alice_cancels_hers;
RESET ROLE;
SELECT status, queued_by, last_error FROM maileroo_outbox;
ROLLBACK;
DROP OWNED BY regress_campaign_alice, regress_campaign_bob;
DROP ROLE regress_campaign_alice, regress_campaign_bob;
DROP EXTENSION maileroo CASCADE;
