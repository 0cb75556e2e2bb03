#!/usr/bin/env bash
# test/bench/analytics.sh: how long the analytics views take over 1,000,000
# events.
#
#   bash test/bench/analytics.sh [EVENTS]     (default 1000000)
#
# Builds maileroo into a temporary install tree, starts a throwaway cluster
# with default settings, and fills it with generated mail over 90 days: three
# messages in four sent through the outbox, one in four known only from its
# events; each message accepted, most delivered, some deferred, about 3%
# bounced (hard or soft), opens (0 to 3), clicks and a few complaints; tags
# spread over ten campaigns.  After VACUUM ANALYZE it runs each query 5 times
# and prints the median, the fastest and the slowest time (psql \timing: the
# time a client sees, planning included).
set -u
. "$(dirname "$0")/../lib.sh"

EVENTS=${1:-1000000}
RUNS=5

mr_install_deps
mr_runas_setup

TMP=$(mktemp -d /tmp/maileroo-bench.XXXXXX)
chmod 755 "$TMP"
trap 'mr_cleanup; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

mr_log "building"
make -s -C "$MR_TOP" PG_CONFIG="$PG_CONFIG" >"$TMP/build.log" 2>&1 ||
	{ cat "$TMP/build.log"; mr_die "build failed"; }
mr_temp_install "$TMP/install"
echo "shared_preload_libraries = 'maileroo'" >"$TMP/bench.conf"
mr_start_cluster "$TMP/cluster" "$(mr_free_port)" "$TMP/bench.conf"

psql_b() { "$MR_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d postgres "$@"; }

# About 3.67 events per message: enough messages for $EVENTS events.
MESSAGES=$((EVENTS * 100 / 367 + 1000))

mr_log "generating $EVENTS events ($MESSAGES messages) over 90 days"
start=$(date +%s)
psql_b -v nmsg="$MESSAGES" -v nevents="$EVENTS" <<'SQL'
CREATE EXTENSION maileroo;
ALTER TABLE maileroo_outbox ALTER account SET DEFAULT 'shop';
-- h: a per-message pseudo-random number that decides its fate.
INSERT INTO maileroo_outbox (reference_id, endpoint, request, status, attempts, created_at, sent_at)
SELECT substr(md5(m::text), 1, 24), '/emails',
	   json_build_object('from', json_build_object('address', 'shop@example.com'),
						 'to', json_build_array(json_build_object('address', 'user' || m || '@example.org')),
						 'subject', 'Message ' || m, 'plain', 'Hello',
						 'tags', json_build_object('campaign', 'c' || (h % 10))),
	   'sent', 1, t, t + interval '1 second'
  FROM generate_series(1, :nmsg) AS m,
	   LATERAL (SELECT hashint4(m)::bigint & 2147483647 AS h) AS r,
	   LATERAL (SELECT date_trunc('day', now()) - (h % 90) * interval '1 day'
					   + ((h / 90) % 86400) * interval '1 second' AS t) AS x
 WHERE h % 4 <> 0;

INSERT INTO maileroo_events (event_id, event_type, event_time, message_id, message_reference_id,
							 recipient, reason, smtp_code, bounce_class, tags, event_data)
SELECT md5(m || k || n), k, t + interval '2 seconds' + v.step * n,
	   md5(m::text) || '@mail.example.com', substr(md5(m::text), 1, 24),
	   'user' || m || '@example.org',
	   CASE WHEN k IN ('failed', 'deferred') THEN
			CASE WHEN k = 'failed' AND h % 7 < 5 THEN '550 5.1.1 No such user' ELSE '452 4.2.2 Mailbox full' END END,
	   CASE WHEN k IN ('failed', 'deferred') THEN CASE WHEN k = 'failed' AND h % 7 < 5 THEN 550 ELSE 452 END END,
	   CASE WHEN k IN ('failed', 'deferred') THEN CASE WHEN k = 'failed' AND h % 7 < 5 THEN 'hard' ELSE 'soft' END END,
	   jsonb_build_object('campaign', 'c' || (h % 10)), '{}'
  FROM generate_series(1, :nmsg) AS m,
	   LATERAL (SELECT hashint4(m)::bigint & 2147483647 AS h) AS r,
	   LATERAL (SELECT date_trunc('day', now()) - (h % 90) * interval '1 day'
					   + ((h / 90) % 86400) * interval '1 second' AS t) AS x,
	   LATERAL (VALUES ('accepted', 1, interval '0', true),
					   ('deferred', 1, interval '1 minute', h % 17 = 0),
					   ('delivered', 1, interval '5 minutes', h % 31 <> 0),
					   ('failed', 1, interval '5 minutes', h % 31 = 0),
					   ('opened', (h / 7) % 4, interval '3 hours', h % 31 <> 0),
					   ('clicked', 1 + (h / 11) % 2, interval '4 hours', h % 31 <> 0 AND h % 9 = 0),
					   ('complained', 1, interval '30 hours', h % 31 <> 0 AND h % 997 = 0))
			AS v(k, cnt, step, wanted),
	   LATERAL generate_series(1, v.cnt) AS n
 WHERE v.wanted
 LIMIT :nevents;
VACUUM ANALYZE;
SQL
echo "   done in $(($(date +%s) - start)) s"
psql_b -c "SELECT (SELECT count(*) FROM maileroo_events) AS events,
				  (SELECT count(*) FROM maileroo_outbox) AS outbox_rows,
				  (SELECT count(*) FROM maileroo_suppressions) AS suppressions,
				  pg_size_pretty(pg_total_relation_size('maileroo_events_opened')
								 + pg_total_relation_size('maileroo_events_delivered')
								 + pg_total_relation_size('maileroo_events_accepted')) AS main_partitions_size"

ref=$(psql_b -Atc "SELECT substr(md5('12345'), 1, 24)")

# time_query LABEL SQL: run SQL $RUNS times after one warm-up run; print the
# median, min and max of psql's \timing.
time_query() {
	local label=$1 sql=$2 times
	times=$( { echo '\timing on'; for _ in $(seq 0 $RUNS); do echo "$sql"; done; } |
		psql_b -o /dev/null 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n $RUNS | sort -n)
	LAST_MEDIAN=$(echo "$times" | sed -n "$(((RUNS + 1) / 2))p")
	printf '%-58s %10s %10s %10s\n' "$label" "$LAST_MEDIAN" \
		"$(echo "$times" | head -1)" "$(echo "$times" | tail -1)"
}

mr_log "queries (ms over $RUNS runs, after a warm-up)"
printf '%-58s %10s %10s %10s\n' "query" "median" "min" "max"
time_query "daily_stats, last 30 days" \
	"SELECT * FROM maileroo_daily_stats WHERE day >= current_date - 30;"
time_query "daily_stats, all 90 days" \
	"SELECT * FROM maileroo_daily_stats;"
all_days=$LAST_MEDIAN
# Baselines: reading every event once, and the per-day counts of unique
# messages per event type that one would write by hand (no outbox, no rates).
time_query "baseline: count(*) over all events" \
	"SELECT count(*) FROM maileroo_events;"
scan=$LAST_MEDIAN
time_query "baseline: hand-written daily unique counts per type" \
	"SELECT (event_time AT TIME ZONE current_setting('TimeZone'))::date, event_type, count(DISTINCT message_reference_id) FROM maileroo_events GROUP BY 1, 2;"
hand=$LAST_MEDIAN
time_query "stats_by_tag('campaign'), last 7 days" \
	"SELECT * FROM maileroo_stats_by_tag('campaign', now() - interval '7 days', now());"
time_query "message_status, one reference_id" \
	"SELECT * FROM maileroo_message_status WHERE reference_id = '$ref';"
time_query "message_status, messages queued in the last hour" \
	"SELECT * FROM maileroo_message_status WHERE queued_at >= now() - interval '1 hour';"
time_query "message_status, all messages (count of opened)" \
	"SELECT count(*) FILTER (WHERE opens > 0) FROM maileroo_message_status;"

echo
echo "analytics over $EVENTS events (medians of $RUNS runs):"
awk -v a="$all_days" -v s="$scan" -v h="$hand" 'BEGIN {
	printf "  daily_stats, all days:  %.0f ms = %.2fx a count(*) over all events, %.2fx the hand-written daily counts\n", a, a / s, a / h }'
