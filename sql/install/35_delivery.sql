
-- ---------------------------------------------------------------------
-- Delivery controls: pausing accounts, retrying failed mail, and the
-- state of each account's sending
-- ---------------------------------------------------------------------

-- Accounts an operator paused; the row with account '' pauses all sending
-- ('' cannot name a foreign server).  The worker reads it before claiming.
CREATE TABLE maileroo_pauses (
	account text PRIMARY KEY,
	paused_at timestamptz NOT NULL DEFAULT now(),
	paused_by name NOT NULL DEFAULT current_user
);
COMMENT ON TABLE maileroo_pauses IS 'Sending accounts paused by maileroo_pause (account '''' pauses all of them)';
REVOKE ALL ON maileroo_pauses FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('maileroo_pauses', '');

-- Wake the worker of this database when the calling transaction commits.
CREATE FUNCTION maileroo_worker_wake()
RETURNS void
AS 'MODULE_PATHNAME', 'maileroo_worker_wake'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION maileroo_worker_wake()
	IS 'Wake (or start) the delivery worker of this database at commit (used by the delivery controls)';
REVOKE ALL ON FUNCTION maileroo_worker_wake() FROM PUBLIC;

CREATE FUNCTION maileroo_pause(account text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO @extschema@.maileroo_pauses (account, paused_by)
	VALUES (coalesce(maileroo_pause.account, ''), session_user)
	ON CONFLICT DO NOTHING;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	PERFORM @extschema@.maileroo_worker_wake();
	RETURN true;
END
$$;
COMMENT ON FUNCTION maileroo_pause(text)
	IS 'Stop claiming mail for an account (NULL: all sending); queued mail waits.  False when it was paused already';
REVOKE ALL ON FUNCTION maileroo_pause(text) FROM PUBLIC;

CREATE FUNCTION maileroo_resume(account text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	was_paused boolean;
BEGIN
	DELETE FROM @extschema@.maileroo_pauses p
	 WHERE p.account OPERATOR(pg_catalog.=) coalesce(maileroo_resume.account, '');
	was_paused := FOUND;
	-- Also a nudge: an open circuit is probed at once.
	PERFORM @extschema@.maileroo_worker_wake();
	RETURN was_paused;
END
$$;
COMMENT ON FUNCTION maileroo_resume(text)
	IS 'Lift the pause of an account (NULL: of all sending) and probe its open circuit at once.  False when it was not paused';
REVOKE ALL ON FUNCTION maileroo_resume(text) FROM PUBLIC;

CREATE FUNCTION maileroo_retry(reference_id text)
RETURNS boolean
LANGUAGE plpgsql STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE @extschema@.maileroo_outbox o
	   SET status = 'queued', attempts = 0, next_attempt_at = pg_catalog.now(),
		   lease_until = NULL
	 WHERE o.reference_id OPERATOR(pg_catalog.=) maileroo_retry.reference_id
	   AND o.status OPERATOR(pg_catalog.=) 'failed';
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	PERFORM @extschema@.maileroo_worker_wake();
	RETURN true;
END
$$;
COMMENT ON FUNCTION maileroo_retry(text)
	IS 'Queue a failed message again with its attempts reset (same reference_id); true when it was failed';
REVOKE ALL ON FUNCTION maileroo_retry(text) FROM PUBLIC;

CREATE FUNCTION maileroo_retry_failed(
	since timestamptz DEFAULT NULL,
	until timestamptz DEFAULT NULL,
	status text DEFAULT 'failed',
	account text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	IF status IS NULL OR status NOT IN ('failed', 'cancelled') THEN
		RAISE EXCEPTION 'status must be ''failed'' or ''cancelled'', not %',
			coalesce(quote_literal(status), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Only mail that will not be sent otherwise can be queued again.';
	END IF;
	UPDATE @extschema@.maileroo_outbox o
	   SET status = 'queued', attempts = 0, next_attempt_at = pg_catalog.now(),
		   lease_until = NULL
	 WHERE o.status OPERATOR(pg_catalog.=) maileroo_retry_failed.status
	   AND (since IS NULL OR o.created_at OPERATOR(pg_catalog.>=) since)
	   AND (until IS NULL OR o.created_at OPERATOR(pg_catalog.<) until)
	   AND (maileroo_retry_failed.account IS NULL
			OR o.account OPERATOR(pg_catalog.=) maileroo_retry_failed.account);
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n OPERATOR(pg_catalog.>) 0 THEN
		PERFORM @extschema@.maileroo_worker_wake();
	END IF;
	RETURN n;
END
$$;
COMMENT ON FUNCTION maileroo_retry_failed(timestamptz, timestamptz, text, text)
	IS 'Queue again, attempts reset, every message with the given status (failed or cancelled) created in [since, until) and sent through account (NULL: any); returns how many';
REVOKE ALL ON FUNCTION maileroo_retry_failed(timestamptz, timestamptz, text, text) FROM PUBLIC;

-- What the worker of this database publishes about each account.
CREATE FUNCTION maileroo_account_info(
	OUT account text,
	OUT state text,
	OUT pace double precision,
	OUT rate_limit double precision,
	OUT in_flight integer,
	OUT sent bigint,
	OUT rate_limited bigint,
	OUT resume_at timestamptz,
	OUT next_probe_at timestamptz,
	OUT last_error text,
	OUT last_error_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'maileroo_account_info'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION maileroo_account_info()
	IS 'Per-account state published by the delivery worker of this database (used by maileroo_account_status)';
REVOKE ALL ON FUNCTION maileroo_account_info() FROM PUBLIC;

CREATE FUNCTION maileroo_account_status(
	OUT account text,
	OUT state text,
	OUT paused boolean,
	OUT pace double precision,
	OUT rate_limit double precision,
	OUT in_flight integer,
	OUT waiting bigint,
	OUT waiting_by_priority jsonb,
	OUT sent_since_start bigint,
	OUT rate_limited_since_start bigint,
	OUT resume_at timestamptz,
	OUT next_probe_at timestamptz,
	OUT last_error text,
	OUT last_error_at timestamptz)
RETURNS SETOF record
LANGUAGE sql VOLATILE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
WITH w AS (
	SELECT o.account, o.priority, count(*) AS n
	  FROM @extschema@.maileroo_outbox o
	 WHERE o.status OPERATOR(pg_catalog.=) ANY (ARRAY['queued', 'retrying']::text[])
	 GROUP BY 1, 2),
q AS (
	SELECT w.account, sum(w.n)::bigint AS waiting,
		   jsonb_object_agg(w.priority::text, w.n ORDER BY w.priority DESC) AS by_priority
	  FROM w GROUP BY w.account),
i AS (SELECT * FROM @extschema@.maileroo_account_info()),
p AS (SELECT p.account FROM @extschema@.maileroo_pauses p),
names AS (
	SELECT q.account FROM q
	UNION SELECT i.account FROM i
	UNION SELECT p.account FROM p WHERE p.account OPERATOR(pg_catalog.<>) ''
	UNION SELECT s.srvname::text
		FROM pg_catalog.pg_foreign_server s
		JOIN pg_catalog.pg_foreign_data_wrapper f ON f.oid OPERATOR(pg_catalog.=) s.srvfdw
	   WHERE f.fdwname OPERATOR(pg_catalog.=) 'maileroo_fdw')
SELECT n.account,
	   CASE WHEN pz.paused THEN 'paused' ELSE coalesce(i.state, 'sending') END,
	   pz.paused, i.pace, i.rate_limit, coalesce(i.in_flight, 0),
	   coalesce(q.waiting, 0), coalesce(q.by_priority, '{}'::jsonb),
	   i.sent, i.rate_limited, i.resume_at, i.next_probe_at, i.last_error, i.last_error_at
  FROM names n
  LEFT JOIN q ON q.account OPERATOR(pg_catalog.=) n.account
  LEFT JOIN i ON i.account OPERATOR(pg_catalog.=) n.account
  CROSS JOIN LATERAL (
	SELECT EXISTS (SELECT 1 FROM p
					WHERE p.account OPERATOR(pg_catalog.=) ANY (ARRAY[n.account, ''])) AS paused) pz
 ORDER BY n.account
$$;
COMMENT ON FUNCTION maileroo_account_status()
	IS 'Per sending account: state (sending, paused, rate-limited, circuit open), pace, mail waiting by priority, last error, next probe';
REVOKE ALL ON FUNCTION maileroo_account_status() FROM PUBLIC;
