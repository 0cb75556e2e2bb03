-- placeholder until the outbox lands: a minimal copy of maileroo_outbox so
-- that the analytics views can be built and tested; removed when the real
-- sql/install/30_outbox.sql is merged.
CREATE TABLE maileroo_outbox (
	reference_id text PRIMARY KEY,
	endpoint text NOT NULL DEFAULT '/emails',
	request json NOT NULL,
	status text NOT NULL DEFAULT 'queued'
		CHECK (status IN ('queued', 'sending', 'retrying', 'sent', 'failed', 'cancelled', 'suppressed')),
	attempts integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT now(),
	lease_until timestamptz,
	created_at timestamptz NOT NULL DEFAULT now(),
	sent_at timestamptz,
	last_http_status integer,
	last_error text,
	response jsonb,
	queued_by name NOT NULL DEFAULT current_user
);
