# test/bench/events_common.sh: what the webhook benchmarks share.  Sourced
# after test/lib.sh.
#
# events_setup ROWS: build the extension into a throwaway install tree,
# start a throwaway cluster (under TMP, removed on exit) and fill it with
# test/bench/events_setup.sql; the Q_* statements below are what the
# benchmarks time.  EVENTS_DEPS names extra Debian packages to install.
events_setup() {
	mr_install_deps ${EVENTS_DEPS[@]+"${EVENTS_DEPS[@]}"}
	mr_runas_setup
	TMP=$(mktemp -d /tmp/maileroo-bench.XXXXXX)
	chmod 755 "$TMP"
	trap 'mr_cleanup; rm -rf "$TMP"' EXIT
	trap 'exit 130' INT TERM

	make -s -C "$MR_TOP" PG_CONFIG="$PG_CONFIG" >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log"; exit 1; }
	mr_temp_install "$TMP/install"
	printf '%s\n' "shared_preload_libraries = 'maileroo'" "shared_buffers = 256MB" \
		"max_wal_size = 4GB" "checkpoint_timeout = 30min" "synchronous_commit = off" \
		"jit = off" "autovacuum = off" >"$TMP/bench.conf"
	mr_start_cluster "$TMP/pg" "$(mr_free_port)" "$TMP/bench.conf"
	mr_log "generating $1 bodies"
	"$MR_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d postgres -v rows="$1" \
		-f "$MR_TOP/test/bench/events_setup.sql" || exit 1
}

# shellcheck disable=SC2034
Q_JSONB="SELECT count(*) FROM raw WHERE body::jsonb IS NOT NULL"
Q_PARSE="SELECT count(*) FROM raw, LATERAL maileroo_parse_event(body)"
# The same typing in plain SQL; count(t.*) makes every column be computed.
Q_SQL=$(cat <<'EOF'
SELECT count(t.*) FROM raw, LATERAL (
	SELECT r.event_id, lower(r.event_type) AS event_type,
		to_timestamp(r.event_time::float8) AS event_time, r.inserted_at,
		r.domain_id, r.user_id,
		CASE WHEN r.message_id LIKE '<%>' THEN substr(r.message_id, 2, length(r.message_id) - 2)
			ELSE r.message_id END AS message_id,
		r.message_reference_id,
		coalesce(substring(rc.t FROM '<([^<>]*)>\s*$'), nullif(btrim(rc.t), '')) AS recipient,
		(r.event_data->>'ip')::inet AS ip,
		r.event_data->>'user_agent' AS user_agent,
		r.event_data->>'original_url' AS url,
		rs.reason,
		sm.code AS smtp_code, sm.status AS smtp_status,
		CASE WHEN coalesce(left(sm.status, 1), left(sm.code::text, 1)) = '5' THEN 'hard'
			WHEN coalesce(left(sm.status, 1), left(sm.code::text, 1)) = '4' THEN 'soft' END AS bounce_class,
		CASE WHEN jsonb_typeof(r.tags) = 'object' THEN r.tags END AS tags,
		CASE WHEN jsonb_typeof(r.event_data) = 'object' THEN r.event_data ELSE '{}' END AS event_data,
		nullif(j.j - ARRAY['event_id', 'event_type', 'event_time', 'inserted_at', 'domain_id',
			'user_id', 'message_id', 'message_reference_id', 'tags', 'event_data'], '{}') AS extra,
		now() AS received_at
	FROM (SELECT body::jsonb AS j) j,
		jsonb_to_record(j.j) AS r(event_id text, event_type text, event_time numeric,
			inserted_at timestamptz, domain_id bigint, user_id bigint, message_id text,
			message_reference_id text, tags jsonb, event_data jsonb),
		LATERAL (SELECT CASE jsonb_typeof(r.event_data->'to')
			WHEN 'string' THEN r.event_data->>'to'
			WHEN 'array' THEN r.event_data->'to'->>0 END AS t) rc,
		LATERAL (SELECT coalesce(r.event_data->>'reason', r.event_data->>'reject_reason') AS reason) rs,
		LATERAL (SELECT substring(rs.reason FROM '^\s*([2-5][0-9][0-9])(?![0-9])')::int AS code,
			substring(rs.reason FROM '(?:^|[^0-9.])([245]\.[0-9]{1,3}\.[0-9]{1,3})') AS status) sm
) t
EOF
)
Q_INSERT="INSERT INTO maileroo_events SELECT e.* FROM raw, LATERAL maileroo_parse_event(body) e"
Q_FLOOR="INSERT INTO floor_events SELECT * FROM typed"
# Not a target: the typed rows again, but through a trivial LATERAL function
# scan, which shows what the executor's nested loop and function scan cost
# an INSERT whatever the function does.
Q_LATERAL="INSERT INTO lateral_events SELECT t.* FROM typed t, LATERAL jsonb_to_record(jsonb_build_object('a', length(t.event_id))) x(a int)"

