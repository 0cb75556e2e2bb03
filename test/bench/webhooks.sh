#!/usr/bin/env bash
# test/bench/webhooks.sh: signed webhooks per second, end to end through the
# reference receiver, beside the handler people write by hand.
#
#   bash test/bench/webhooks.sh [SECONDS] [ROUNDS] [BODIES]
#                               (defaults: 10 seconds a run, 3 rounds, 100000 bodies)
#
# Starts a throwaway cluster (synchronous_commit on) with maileroo and a
# webhook secret, and two receivers on 127.0.0.1, both
# examples/webhook-receiver/server.js with a pool of 32 connections:
#   maileroo_ingest  as shipped: SELECT maileroo_ingest(body, signature),
#                    the database verifies, parses into the typed,
#                    partitioned event tables and stores each event once;
#   by hand          test/bench/webhooks_by_hand.js: the signature verified
#                    in Node, then INSERT INTO a table (event_id text PRIMARY
#                    KEY, body jsonb) ... ON CONFLICT DO NOTHING.
# BODIES signed events (Maileroo's shapes: delivered, opened, clicked,
# failed) are generated once; wrk (Debian's) sends each once per run over
# keep-alive connections, at 1 and at 32 connections, from one thread.  The
# tables are emptied and checkpointed before every run, the order of the two
# receivers alternates between rounds.  All of it twice: "durable" with
# fsync on (every acknowledged webhook is on disk: the disk's flush time
# decides much of the rate) and "write" with fsync off (each commit still
# waits for its WAL write: what the CPU allows).  Prints every run (requests
# per second, latency, rows stored, non-2xx answers, repeats), then the
# medians and the ratio maileroo_ingest / by hand.
set -u
. "$(dirname "$0")/../lib.sh"

SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-3}
BODIES=${3:-100000}
SECRET=whsec-bench

mr_install_deps wrk bc
mr_install_node || mr_die "this benchmark needs Node.js 18 or later and npm: $MR_NODE_MISSING"
mr_runas_setup

TMP=$(mktemp -d /tmp/maileroo-bench.XXXXXX)
chmod 755 "$TMP"
trap 'mr_cleanup; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

mr_log "building"
make -s -C "$MR_TOP" PG_CONFIG="$PG_CONFIG" >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log"; exit 1; }
mr_temp_install "$TMP/install"
export PATH="$MR_BINDIR:$PATH"
RECV=$MR_TOP/examples/webhook-receiver
(cd "$RECV" && npm ci --no-audit --no-fund) >"$TMP/npm.log" 2>&1 || { cat "$TMP/npm.log"; mr_die "npm ci failed"; }

cat >"$TMP/bench.conf" <<CONF
fsync = on
synchronous_commit = on
max_connections = 100
shared_buffers = 256MB
max_wal_size = 4GB
CONF
mr_start_cluster "$TMP/db" "$(mr_free_port)" "$TMP/bench.conf"
psql -X -q -v ON_ERROR_STOP=1 -d postgres <<SQL || mr_die "setup failed"
CREATE EXTENSION maileroo;
-- The sending account whose webhook secret signs the bodies.
CREATE SERVER bench FOREIGN DATA WRAPPER maileroo_fdw;
SET log_statement = 'none';
CREATE USER MAPPING FOR PUBLIC SERVER bench OPTIONS (webhook_secret '$SECRET');
RESET log_statement;
CREATE TABLE webhook_events_by_hand (
	event_id text PRIMARY KEY,
	body jsonb NOT NULL,
	received_at timestamptz NOT NULL DEFAULT now()
);
CREATE ROLE bench_webhook LOGIN;
GRANT USAGE ON SCHEMA public TO bench_webhook;
GRANT EXECUTE ON FUNCTION maileroo_ingest TO bench_webhook;
GRANT SELECT, INSERT ON webhook_events_by_hand TO bench_webhook;  -- SELECT: ON CONFLICT (event_id)
SQL

mr_log "signing $BODIES webhook bodies"
python3 - "$TMP/bodies.tsv" "$BODIES" "$SECRET" <<'PY'
import hashlib, hmac, json, random, sys
path, n, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
rnd = random.Random(17)
ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
with open(path, "w") as f:
    for i in range(n):
        ref = "%024x" % rnd.getrandbits(96)
        kind = ("delivered", "opened", "opened", "clicked", "delivered", "failed")[i % 6]
        data = {"delivered": {"to": "user%d@example.org" % i},
                "opened": {"ip": "203.0.113.%d" % (i % 250), "user_agent": ua},
                "clicked": {"ip": "203.0.113.%d" % (i % 250), "original_url": "https://example.com/p/%d" % i, "user_agent": ua},
                "failed": {"to": "user%d@example.org" % i,
                           "reason": "550 5.1.1 The email account that you tried to reach does not exist."}}[kind]
        t = 1764600000 + i
        ev = {"domain_id": 774, "user_id": 323, "event_id": "%048x" % rnd.getrandbits(192),
              "event_time": t, "event_type": kind,
              "inserted_at": "2025-12-01T14:%02d:%02d.%03dZ" % (i // 60 % 60, i % 60, i % 1000),
              "message_id": "<%s@mail.example.com>" % ref, "message_reference_id": ref,
              "tags": {"campaign": "welcome"} if i % 2 else None, "event_data": data}
        body = json.dumps(ev, separators=(",", ":"))
        f.write(hmac.new(secret, body.encode(), hashlib.sha256).hexdigest() + "\t" + body + "\n")
PY
echo "   $(wc -c <"$TMP/bodies.tsv" | awk -v n="$BODIES" '{printf "%d bytes a body on average", $1 / n - 65}')"

start_receiver() { # NAME PORT SCRIPT
	(cd "$RECV" && exec env PGDATABASE=postgres PGUSER=bench_webhook PORT="$2" PG_POOL_MAX=32 \
		WEBHOOK_SECRET="$SECRET" node "$3") >"$TMP/$1.log" 2>&1 &
	MR_PIDS+=($!)
	local i
	for i in $(seq 1 100); do
		curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && return 0
		sleep 0.1
	done
	cat "$TMP/$1.log"
	mr_die "receiver $1 did not start"
}
INGEST_PORT=$(mr_free_port)
start_receiver ingest "$INGEST_PORT" "$RECV/server.js"
HAND_PORT=$(mr_free_port)
start_receiver hand "$HAND_PORT" "$MR_TOP/test/bench/webhooks_by_hand.js"

declare -A url=([ingest]="http://127.0.0.1:$INGEST_PORT/" [hand]="http://127.0.0.1:$HAND_PORT/")
declare -A table=([ingest]=maileroo_events [hand]=webhook_events_by_hand)
declare -A label=([ingest]=maileroo_ingest [hand]="by hand")

# run KIND CONNECTIONS SECONDS: one wrk run; prints "rate p50 p99 stored non2xx repeats".
run() {
	psql -X -q -d postgres -c "TRUNCATE maileroo_events, maileroo_rejected_events, webhook_events_by_hand" \
		-c "CHECKPOINT" >/dev/null
	wrk -t1 -c"$2" -d"$3s" --timeout 10s -s "$MR_TOP/test/bench/webhooks.lua" "${url[$1]}" \
		-- "$TMP/bodies.tsv" 1 >"$TMP/wrk.out" 2>&1
	local rate p50 p99 bad rep stored
	rate=$(sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p' "$TMP/wrk.out")
	bad=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\)/\1/p' "$TMP/wrk.out")
	p50=$(sed -n 's/^latency_p50_us //p' "$TMP/wrk.out")
	p99=$(sed -n 's/^latency_p99_us //p' "$TMP/wrk.out")
	rep=$(sed -n 's/^repeats //p' "$TMP/wrk.out")
	stored=$(psql -X -Atc "SELECT count(*) FROM ${table[$1]}" -d postgres)
	[ -n "$rate" ] || { cat "$TMP/wrk.out"; mr_die "wrk failed"; }
	echo "${rate%.*} ${p50:-0} ${p99:-0} $stored ${bad:-0} ${rep:-0}"
}

mr_log "warming up (prepares the statements, fills the pools)"
run ingest 32 2 >/dev/null
run hand 32 2 >/dev/null

declare -A rates
declare -A what=([durable]="fsync on, synchronous_commit on: each acknowledged webhook is on disk"
	[write]="fsync off, synchronous_commit on: each commit waits for its WAL write, not for the disk")
for mode in durable write; do
	fsync=on
	[ $mode = write ] && fsync=off
	psql -X -q -d postgres -c "ALTER SYSTEM SET fsync = $fsync" -c "SELECT pg_reload_conf()" >/dev/null
	sleep 1
	mr_log "$mode: ${what[$mode]}; runs of ${SECONDS_PER_RUN}s (the machine is shared: other work may run beside)"
	printf '%-6s %-5s %-16s %10s %9s %9s %9s %7s %8s\n' round conns receiver "webhooks/s" "p50 ms" "p99 ms" stored non-2xx repeats
	for round in $(seq 1 "$ROUNDS"); do
		if [ $((round % 2)) -eq 1 ]; then order="ingest hand"; else order="hand ingest"; fi
		for c in 1 32; do
			for kind in $order; do
				read -r rate p50 p99 stored bad rep < <(run "$kind" "$c" "$SECONDS_PER_RUN")
				printf '%-6s %-5s %-16s %10s %9.2f %9.2f %9s %7s %8s\n' "$round" "$c" "${label[$kind]}" "$rate" \
					"$(echo "$p50 / 1000" | bc -l)" "$(echo "$p99 / 1000" | bc -l)" "$stored" "$bad" "$rep"
				rates[$mode.$kind.$c]+="$rate "
				[ "$bad" -eq 0 ] || echo "   ($bad answers were not 2xx: the receiver's log says why)"
			done
		done
	done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo
echo "signed webhooks per second end to end through the receiver, median of $ROUNDS runs of ${SECONDS_PER_RUN}s ($(nproc) CPUs shared with wrk, the receivers and other work)"
printf '%-8s %-12s %16s %10s %28s\n' commit connections maileroo_ingest "by hand" "maileroo_ingest / by hand"
for mode in durable write; do
	for c in 1 32; do
		mi=$(echo "${rates[$mode.ingest.$c]}" | median)
		mh=$(echo "${rates[$mode.hand.$c]}" | median)
		printf '%-8s %-12s %16.0f %10.0f %28.2f\n' "$mode" "$c" "$mi" "$mh" "$(echo "$mi / $mh" | bc -l)"
	done
done
echo "durable: ${what[durable]}"
echo "write:   ${what[write]}"
