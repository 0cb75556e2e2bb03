#!/usr/bin/env bash
# test/bench/events.sh: how fast the webhook parser is, side by side with
# what PostgreSQL does without it.
#
#   bash test/bench/events.sh [ROWS] [ROUNDS]      (defaults 200000 and 5)
#
# Builds the extension into a throwaway install tree, starts a throwaway
# cluster, generates ROWS realistic webhook bodies (every documented event
# type, with tags, IPv4 and IPv6 addresses, bounce reasons) and times, in
# alternating order within each round, and prints the medians and ratios:
#
#   jsonb     SELECT count(*) FROM raw WHERE body::jsonb IS NOT NULL
#   parse     SELECT count(*) FROM raw, LATERAL maileroo_parse_event(body)
#   sql       the same typing in plain SQL: jsonb_to_record, casts, regexps
#   insert    INSERT INTO maileroo_events SELECT e.* FROM raw, LATERAL maileroo_parse_event(body) e
#   floor     INSERT of the same rows, already typed, into an identical empty table
#             (same partitions, indexes and suppression trigger)
#   lateral   the floor's rows again, through a no-op LATERAL function (for reference)
#
# Targets: parse/jsonb <= 1, sql/parse >= 2, insert/floor <= 1.25, judged on
# the median of the per-round ratios.  Then it
# calls the parser 1,000,000 times in one backend and prints the backend's
# memory context totals as it goes.
set -u
. "$(dirname "$0")/../lib.sh"

ROWS=${1:-200000}
ROUNDS=${2:-5}

mr_install_deps
mr_runas_setup
TMP=$(mktemp -d /tmp/maileroo-bench.XXXXXX)
chmod 755 "$TMP"
trap 'mr_cleanup; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

make -s -C "$MR_TOP" PG_CONFIG="$PG_CONFIG" >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log"; exit 1; }
mr_temp_install "$TMP/install"
cat >"$TMP/bench.conf" <<EOF
shared_preload_libraries = 'maileroo'
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
synchronous_commit = off
jit = off
autovacuum = off
EOF
mr_start_cluster "$TMP/pg" "$(mr_free_port)" "$TMP/bench.conf"
PSQL=("$MR_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d postgres)

mr_log "generating $ROWS bodies"
"${PSQL[@]}" <<EOF
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
FROM generate_series(1, $ROWS) i;

-- The same rows already typed, and an empty table identical to maileroo_events.
CREATE TABLE typed AS SELECT e.* FROM raw, LATERAL maileroo_parse_event(body) e;
DO \$\$
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
\$\$;
VACUUM ANALYZE raw;
VACUUM ANALYZE typed;
EOF
[ $? -eq 0 ] || exit 1
"${PSQL[@]}" -At -c "SELECT 'average body: ' || round(avg(length(body))) || ' bytes' FROM raw"

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

# ms QUERY: run QUERY in a fresh session (after a warm-up of the library)
# and print its time in milliseconds.
ms() {
	"${PSQL[@]}" -c "SELECT maileroo_version()" -c '\timing on' -c "$1" 2>&1 |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# The typed SQL and the parser must agree before they are compared.
agree=$("${PSQL[@]}" -At -c "SELECT count(*) FROM raw, LATERAL maileroo_parse_event(body) e WHERE e.ip IS DISTINCT FROM (e.event_data->>'ip')::inet")
[ "$agree" = 0 ] || mr_die "parser and SQL disagree on $agree rows"

declare -A T
mr_log "timing $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
	"${PSQL[@]}" -c "TRUNCATE maileroo_events, floor_events, lateral_events" -c "CHECKPOINT"
	if [ $((r % 2)) -eq 1 ]; then order="jsonb parse sql insert floor lateral"; else order="lateral floor insert sql parse jsonb"; fi
	for q in $order; do
		case $q in
		jsonb) t=$(ms "$Q_JSONB") ;;
		parse) t=$(ms "$Q_PARSE") ;;
		sql) t=$(ms "$Q_SQL") ;;
		insert | floor | lateral)
			# Each insert starts from an empty suppression list, as the others did.
			"${PSQL[@]}" -c "TRUNCATE maileroo_suppressions"
			case $q in
			insert) t=$(ms "$Q_INSERT") ;;
			floor) t=$(ms "$Q_FLOOR") ;;
			lateral) t=$(ms "$Q_LATERAL") ;;
			esac ;;
		esac
		[ -n "$t" ] || mr_die "query $q failed"
		T[$q]="${T[$q]:-} $t"
	done
	echo "round $r:$(for q in jsonb parse sql insert floor lateral; do printf ' %s %s' "$q" "$(echo "${T[$q]}" | awk '{print $NF}')"; done) (ms)"
done

declare -A M
for q in jsonb parse sql insert floor lateral; do
	M[$q]=$(echo "${T[$q]}" | tr ' ' '\n' | grep . | median)
done
echo
echo "medians over $ROUNDS rounds, $ROWS bodies (ms):"
for q in jsonb parse sql insert floor lateral; do printf '  %-7s %10.1f\n' "$q" "${M[$q]}"; done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
check() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {ok = (op == "<=") ? v <= t : v >= t; print ok ? "meets" : "MISSES"}'; }
# paired A B: the median of the per-round ratios A/B (each pair measured
# side by side in the same round, so load that comes and goes cancels out)
paired() {
	paste <(echo "${T[$1]}" | tr ' ' '\n' | grep .) <(echo "${T[$2]}" | tr ' ' '\n' | grep .) |
		awk '{print $1 / $2}' | median | awk '{printf "%.2f", $1}'
}
r1=$(ratio "${M[parse]}" "${M[jsonb]}") p1=$(paired parse jsonb)
r2=$(ratio "${M[sql]}" "${M[parse]}") p2=$(paired sql parse)
r3=$(ratio "${M[insert]}" "${M[floor]}") p3=$(paired insert floor)
echo "ratios (of the medians; median of the per-round ratios):"
echo "  parse / jsonb  = $r1; $p1   (target <= 1.00: $(check "$p1" '<=' 1.00))"
echo "  sql / parse    = $r2; $p2   (target >= 2.00: $(check "$p2" '>=' 2.00))"
echo "  insert / floor = $r3; $p3   (target <= 1.25: $(check "$p3" '<=' 1.25))"
echo "  lateral / floor = $(ratio "${M[lateral]}" "${M[floor]}"); $(paired lateral floor)   (no target: the typed rows through a no-op LATERAL function)"
echo "  insert / lateral = $(ratio "${M[insert]}" "${M[lateral]}"); $(paired insert lateral)  (the parser's own share of the insert)"
printf '  per body: parse %.2f us, jsonb %.2f us, sql %.2f us\n' \
	"$(awk -v t="${M[parse]}" -v n="$ROWS" 'BEGIN {print t * 1000 / n}')" \
	"$(awk -v t="${M[jsonb]}" -v n="$ROWS" 'BEGIN {print t * 1000 / n}')" \
	"$(awk -v t="${M[sql]}" -v n="$ROWS" 'BEGIN {print t * 1000 / n}')"

echo
mr_log "memory over 1,000,000 calls in one backend"
"${PSQL[@]}" <<'EOF'
SET client_min_messages = notice;
DO $$
DECLARE
	bodies text[];
	n int;
	total bigint;
	first bigint;
	ev maileroo_events;
BEGIN
	SELECT array_agg(body) INTO bodies FROM (SELECT body FROM raw LIMIT 1000) s;
	n := array_length(bodies, 1);
	-- i = 0 loads the library and plans the memory query; the same
	-- statement then measures every 250,000 calls
	FOR i IN 0..1000000 LOOP
		ev := maileroo_parse_event(bodies[1 + i % n]);
		IF i % 250000 = 0 THEN
			SELECT sum(total_bytes) INTO total FROM pg_backend_memory_contexts;
			first := coalesce(first, total);
			RAISE NOTICE 'calls %: backend memory contexts total % bytes', i, total;
		END IF;
	END LOOP;
	RAISE NOTICE 'growth over 1,000,000 calls: % bytes', total - first;
END
$$;
-- And 1,000,000 calls in two queries: the second leaves nothing behind.
SELECT sum(total_bytes) AS m0 FROM pg_backend_memory_contexts \gset
SELECT count(*) AS calls
FROM (SELECT body FROM generate_series(1, 10) g, raw LIMIT 500000) s, LATERAL maileroo_parse_event(s.body) e;
SELECT sum(total_bytes) AS m1 FROM pg_backend_memory_contexts \gset
SELECT count(*) AS calls
FROM (SELECT body FROM generate_series(1, 10) g, raw LIMIT 500000) s, LATERAL maileroo_parse_event(s.body) e;
SELECT sum(total_bytes) AS m2 FROM pg_backend_memory_contexts \gset
SELECT :m0 AS before_bytes, :m1 AS after_first_bytes, :m2 AS after_second_bytes,
	:m2 - :m1 AS growth_second_query;
EOF
