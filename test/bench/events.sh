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

. "$MR_TOP/test/bench/events_common.sh"
events_setup "$ROWS"
PSQL=("$MR_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d postgres)
"${PSQL[@]}" -At -c "SELECT 'average body: ' || round(avg(length(body))) || ' bytes' FROM raw"

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
