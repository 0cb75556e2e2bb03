#!/usr/bin/env bash
# test/bench/events_callgrind.sh: the webhook benchmark's statements counted
# in instructions, which do not move with the machine's load.
#
#   bash test/bench/events_callgrind.sh [ROWS]      (default 20000)
#
# Builds the data of test/bench/events.sh (ROWS bodies), stops the cluster,
# and runs each statement alone in a single-user backend under callgrind.
# Prints the instructions the statement's executor run took (the inclusive
# cost of standard_ExecutorRun, which covers the suppression trigger) per
# body, and the same ratios events.sh prints from wall-clock time.  On a
# quiet machine the two agree to a few percent; on a shared one this is the
# figure that does not drift.  Takes a few minutes: valgrind runs the
# backend about 50 times slower.
set -u
. "$(dirname "$0")/../lib.sh"

ROWS=${1:-20000}

EVENTS_DEPS=(valgrind)
. "$MR_TOP/test/bench/events_common.sh"
events_setup "$ROWS"
"${MR_AS[@]}" "$MR_BINDIR/pg_ctl" -D "$TMP/pg/data" -m fast -w stop >/dev/null ||
	mr_die "could not stop the cluster"

mkdir -p "$TMP/cg"
[ -n "${MR_USER:-}" ] && chown "$MR_USER" "$TMP/cg"

# count NAME QUERY: instructions per body of QUERY's executor run.
count() {
	local name=$1 query=$2 ir
	printf 'TRUNCATE maileroo_events, floor_events, lateral_events, maileroo_suppressions;\n%s;\n' \
		"$(echo "$query" | tr '\n' ' ')" >"$TMP/cg/$name.sql"
	"${MR_AS[@]}" valgrind --tool=callgrind --callgrind-out-file="$TMP/cg/$name.out" \
		"$MR_BINDIR/postgres" --single -D "$TMP/pg/data" postgres \
		<"$TMP/cg/$name.sql" >"$TMP/cg/$name.log" 2>&1 ||
		{ tail -20 "$TMP/cg/$name.log"; mr_die "$name failed under callgrind"; }
	ir=$(callgrind_annotate --inclusive=yes --threshold=100 "$TMP/cg/$name.out" 2>/dev/null |
		awk 'NF >= 2 && $(NF-1) ~ /:standard_ExecutorRun$/ {gsub(",", "", $1); print $1; exit}')
	[ -n "$ir" ] || mr_die "no executor run found for $name"
	awk -v i="$ir" -v n="$ROWS" 'BEGIN {printf "%.0f", i / n}'
}

declare -A I
mr_log "counting instructions per body over $ROWS bodies"
for q in jsonb parse floor lateral insert; do
	case $q in
	jsonb) I[$q]=$(count jsonb "$Q_JSONB") ;;
	parse) I[$q]=$(count parse "$Q_PARSE") ;;
	floor) I[$q]=$(count floor "$Q_FLOOR") ;;
	lateral) I[$q]=$(count lateral "$Q_LATERAL") ;;
	insert) I[$q]=$(count insert "$Q_INSERT") ;;
	esac || exit 1
	printf '  %-8s %9s instructions per body\n' "$q" "${I[$q]}"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
echo "instruction ratios:"
echo "  parse / jsonb    = $(ratio "${I[parse]}" "${I[jsonb]}")   (target <= 1.00)"
echo "  insert / floor   = $(ratio "${I[insert]}" "${I[floor]}")   (target <= 1.25)"
echo "  lateral / floor  = $(ratio "${I[lateral]}" "${I[floor]}")   (the typed rows through a no-op LATERAL function)"
echo "  insert / lateral = $(ratio "${I[insert]}" "${I[lateral]}")"
