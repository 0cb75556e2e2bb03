#!/usr/bin/env bash
# test/bench/outbox.sh: how fast the outbox queues and the worker delivers.
#
#   bash test/bench/outbox.sh [MESSAGES] [RUNS]
#
# Starts a throwaway cluster (maileroo preloaded, maileroo.concurrency =
# 128) and nginx with Debian's echo module on 127.0.0.1 standing in for
# Maileroo: every answer is the success envelope after echo_sleep 0.02, i.e.
# 20 ms added to every request.  Prints, as medians of RUNS runs:
#   - queue rate: maileroo_send calls per second in one session;
#   - delivery rate: MESSAGES (default 20,000) queued in one transaction,
#     from its commit to the last row recorded as sent;
#   - connections nginx saw (distinct $connection values) against the
#     concurrency;
#   - the worker's private memory (RssAnon) and its memory context total
#     after each 20,000 of 100,000 messages, to show it stays flat.
set -u
. "$(dirname "$0")/../lib.sh"

N=${1:-20000}
RUNS=${2:-3}
CONC=128

mr_install_deps nginx libnginx-mod-http-echo
mr_runas_setup
TMP=$(mktemp -d /tmp/maileroo-bench.XXXXXX)
chmod 755 "$TMP"
NGINX_PID=
finish() {
	[ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null
	mr_cleanup
	rm -rf "$TMP"
}
trap finish EXIT
trap 'exit 130' INT TERM

mr_log "building"
make -s -C "$MR_TOP" PG_CONFIG="$PG_CONFIG" >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log"; exit 1; }
mr_temp_install "$TMP/install"
export PATH="$MR_BINDIR:$PATH"

# nginx: the success envelope after 20 ms, keep-alive without limit.
NGINX_PORT=$(mr_free_port)
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	log_format conn '\$connection';
	client_body_temp_path $TMP/nginx/body;
	proxy_temp_path $TMP/nginx/proxy;
	fastcgi_temp_path $TMP/nginx/fastcgi;
	uwsgi_temp_path $TMP/nginx/uwsgi;
	scgi_temp_path $TMP/nginx/scgi;
	keepalive_requests 1000000;
	keepalive_timeout 600s;
	server {
		listen 127.0.0.1:$NGINX_PORT;
		location /api/v2/emails {
			access_log $TMP/nginx/access.log conn buffer=64k flush=1s;
			default_type application/json;
			echo_read_request_body;
			echo_sleep 0.02;
			echo '{"success":true,"message":"The email has been queued for delivery.","data":{"reference_id":"000000000000000000000000"}}';
		}
	}
}
CONF
nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" >"$TMP/nginx/out.log" 2>&1 &
NGINX_PID=$!
for i in $(seq 1 50); do
	curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/api/v2/emails" -d '{}' && break
	sleep 0.1
done

cat >"$TMP/bench.conf" <<CONF
shared_preload_libraries = 'maileroo'
maileroo.database_name = 'postgres'
maileroo.concurrency = $CONC
shared_buffers = '256MB'
CONF
mr_start_cluster "$TMP/pg" "$(mr_free_port)" "$TMP/bench.conf"
PSQL=(psql -X -q -At -d postgres)
"${PSQL[@]}" -c 'CREATE EXTENSION maileroo' \
	-c "CREATE SERVER bench FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url 'http://127.0.0.1:$NGINX_PORT/api/v2')" \
	-c "CREATE USER MAPPING FOR PUBLIC SERVER bench OPTIONS (api_key 'bench-key')"

# Wait until nothing is left to send: short polls (through the partial
# indexes), each its own transaction, so that no snapshot is held open.
wait_drained() {
	while [ "$("${PSQL[@]}" -c "SELECT EXISTS (SELECT 1 FROM maileroo_outbox WHERE status IN ('queued', 'retrying'))
			OR EXISTS (SELECT 1 FROM maileroo_outbox WHERE status = 'sending')")" = t ]; do
		sleep 0.05
	done
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
send_sql="SELECT count(maileroo_send('Shop <shop@example.com>', 'user' || i || '@example.org', 'Order ' || i || ' has shipped', html => '<p>Your order is on its way.</p>', tags => '{\"kind\": \"shipping\"}')) FROM generate_series(1, $N) i"

# 1. Queue rate: maileroo_send alone, in a transaction rolled back.
mr_log "queue rate: $N maileroo_send calls in one session, $RUNS runs"
for r in $(seq 1 "$RUNS"); do
	q=$("${PSQL[@]}" -c "SELECT clock_timestamp()" -c "BEGIN" -c "$send_sql" -c "ROLLBACK" -c "SELECT clock_timestamp()" |
		awk 'NR==1 {a=$0} NR==3 {b=$0} END {print a "|" b}')
	"${PSQL[@]}" -c "SELECT round($N / extract(epoch FROM '${q#*|}'::timestamptz - '${q%|*}'::timestamptz))"
done >"$TMP/queue.txt"
queue_rate=$(median <"$TMP/queue.txt")
echo "queue rate runs (msg/s): $(tr '\n' ' ' <"$TMP/queue.txt")"

# 2. End-to-end delivery: commit of N queued messages to the last recorded.
mr_log "delivery: $N messages, commit to the last one recorded as sent, $RUNS runs"
: >"$TMP/deliver.txt"
conns_max=0
for r in $(seq 1 "$RUNS"); do
	"${PSQL[@]}" -c "TRUNCATE maileroo_outbox"
	: >"$TMP/nginx/access.log"
	t_commit=$("${PSQL[@]}" -c "BEGIN" -c "$send_sql" -c "COMMIT" -c "SELECT clock_timestamp()" | tail -1)
	wait_drained
	"${PSQL[@]}" -c "SELECT round($N / extract(epoch FROM max(sent_at) - '$t_commit'::timestamptz)) FROM maileroo_outbox" >>"$TMP/deliver.txt"
	sleep 1.2	# the access log is flushed every second
	c=$(sort -u "$TMP/nginx/access.log" | wc -l)
	[ "$c" -gt "$conns_max" ] && conns_max=$c
	bad=$("${PSQL[@]}" -c "SELECT count(*) FROM maileroo_outbox WHERE status <> 'sent' OR attempts <> 1")
	[ "$bad" -eq 0 ] || echo "warning: $bad messages not sent in one attempt"
done
deliver_rate=$(median <"$TMP/deliver.txt")
echo "delivery runs (msg/s): $(tr '\n' ' ' <"$TMP/deliver.txt")"

# 3. Memory over 100,000 messages, 20,000 at a time.
mr_log "worker memory over 100,000 messages"
pid=$("${PSQL[@]}" -c "SELECT pid FROM maileroo_worker_status()")
"${PSQL[@]}" -c "TRUNCATE maileroo_outbox"
mem=()
for b in 1 2 3 4 5; do
	"${PSQL[@]}" -c "SELECT count(maileroo_send('shop@example.com', 'u' || i || '@example.org', 'Memory ' || i, plain => 'hi')) FROM generate_series(1, 20000) i" >/dev/null
	wait_drained
	rss=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status")
	"${PSQL[@]}" -c "SELECT pg_log_backend_memory_contexts($pid)" >/dev/null
	sleep 0.5
	total=$(grep "PID $pid\|\[$pid\]" "$TMP/pg/postmaster.log" | grep -o 'Grand total: [0-9]* bytes' | tail -1 | grep -o '[0-9]*')
	mem+=("$((b * 20000)): RssAnon ${rss} kB, contexts ${total:-?} bytes")
done

echo
echo "maileroo outbox benchmark: nginx + echo_sleep 0.02, maileroo.concurrency = $CONC, $(nproc) CPUs"
echo "  maileroo_send, one session:          $queue_rate msg/s (median of $RUNS x $N)"
echo "  delivery, commit to last recorded:   $deliver_rate msg/s (median of $RUNS x $N)"
echo "  connections opened (max of runs):    $conns_max (concurrency $CONC)"
echo "  ideal at 20 ms per request:          $((CONC * 50)) msg/s"
echo "  worker memory after each 20,000:"
for m in "${mem[@]}"; do echo "    $m"; done
