
-- ---------------------------------------------------------------------
-- Webhook events
-- ---------------------------------------------------------------------

-- One row per webhook event, partitioned by type so that each documented
-- type has a table of its own; types Maileroo adds later land in
-- maileroo_events_other and are never lost.
CREATE TABLE maileroo_events (
	event_id text NOT NULL,
	event_type text NOT NULL,
	event_time timestamptz NOT NULL,
	inserted_at timestamptz,
	domain_id bigint,
	user_id bigint,
	message_id text,
	message_reference_id text,
	recipient text,
	ip inet,
	user_agent text,
	url text,
	reason text,
	smtp_code integer,
	smtp_status text,
	bounce_class text,
	tags jsonb,
	event_data jsonb NOT NULL,
	extra jsonb,
	received_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (event_id, event_type)
) PARTITION BY LIST (event_type);

CREATE TABLE maileroo_events_accepted PARTITION OF maileroo_events FOR VALUES IN ('accepted');
CREATE TABLE maileroo_events_delivered PARTITION OF maileroo_events FOR VALUES IN ('delivered');
CREATE TABLE maileroo_events_rejected PARTITION OF maileroo_events FOR VALUES IN ('rejected');
CREATE TABLE maileroo_events_deferred PARTITION OF maileroo_events FOR VALUES IN ('deferred');
CREATE TABLE maileroo_events_failed PARTITION OF maileroo_events FOR VALUES IN ('failed');
CREATE TABLE maileroo_events_opened PARTITION OF maileroo_events FOR VALUES IN ('opened');
CREATE TABLE maileroo_events_clicked PARTITION OF maileroo_events FOR VALUES IN ('clicked');
CREATE TABLE maileroo_events_complained PARTITION OF maileroo_events FOR VALUES IN ('complained');
CREATE TABLE maileroo_events_other PARTITION OF maileroo_events DEFAULT;

CREATE INDEX maileroo_events_event_time_idx ON maileroo_events (event_time);
CREATE INDEX maileroo_events_reference_idx ON maileroo_events (message_reference_id, event_time);
CREATE INDEX maileroo_events_tags_idx ON maileroo_events USING gin (tags);

COMMENT ON TABLE maileroo_events IS 'Maileroo webhook events, one row per event, partitioned by event_type';
