#!/usr/bin/env bash
# test/bench/campaign.sh: how fast a campaign is queued and delivered
# through POST /emails/bulk, beside the per-message path.
#
#   bash test/bench/campaign.sh [RECIPIENTS] [RUNS]
#
# Starts a throwaway cluster (maileroo preloaded, maileroo.concurrency =
# 128) and nginx on 127.0.0.1 standing in for Maileroo, every answer 20 ms
# after the request: /api/v2/emails answers the success envelope with
# Debian's echo module (echo_sleep 0.02), as test/bench/outbox.sh does;
# /api/v2/emails/bulk must answer the reference ids of the messages it was
# sent (data.reference_ids), which the echo module cannot compute, so a few
# lines of njs (Debian's libnginx-mod-http-js) read them from the body and
# answer after setTimeout(20 ms).  Prints, as medians of RUNS runs:
#   - queue rate: RECIPIENTS (default 100,000) queued by one
#     maileroo_send_campaign statement, per second of wall time and per
#     second of the backend's CPU time, beside maileroo_send called once per
#     recipient for 20,000 recipients;
#   - delivery rate: a committed campaign of RECIPIENTS, from its commit to
#     the last row recorded as sent, per second of wall time and per second
#     of the worker's CPU time, beside 20,000 maileroo_send messages;
#   - the worker's private memory (RssAnon) and memory context total after
#     each run, to show it stays flat.
# Run it under flock /tmp/maileroo-bench.lock, alone on the machine if you
# can: the CPU figures are the backend's own, the wall ones are not.
set -u
. "$(dirname "$0")/../lib.sh"

N=${1:-100000}
RUNS=${2:-3}
NS=20000
CONC=128

mr_install_deps nginx libnginx-mod-http-echo libnginx-mod-http-js
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

NGINX_PORT=$(mr_free_port)
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/bulk.js" <<'JS'
// The reference ids of the messages of a bulk request, 20 ms later.
function bulk(r) {
	var refs;
	try {
		refs = JSON.parse(r.requestText).messages.map(function (m) { return m.reference_id; });
	} catch (e) {
		r.headersOut['Content-Type'] = 'application/json';
		r.return(400, '{"success":false,"message":"The request body must be a valid JSON object.","data":null}');
		return;
	}
	setTimeout(function () {
		r.headersOut['Content-Type'] = 'application/json';
		r.return(200, JSON.stringify({success: true, message: 'The emails have been queued for delivery.',
									  data: {reference_ids: refs}}));
	}, 20);
}
export default {bulk};
JS
cat >"$TMP/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
load_module /usr/lib/nginx/modules/ngx_http_js_module.so;
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $TMP/nginx/body;
	proxy_temp_path $TMP/nginx/proxy;
	fastcgi_temp_path $TMP/nginx/fastcgi;
	uwsgi_temp_path $TMP/nginx/uwsgi;
	scgi_temp_path $TMP/nginx/scgi;
	keepalive_requests 1000000;
	keepalive_timeout 600s;
	client_max_body_size 16m;
	client_body_buffer_size 16m;
	js_import bulk from $TMP/nginx/bulk.js;
	server {
		listen 127.0.0.1:$NGINX_PORT;
		location = /api/v2/emails/bulk {
			js_content bulk.bulk;
		}
		location /api/v2/emails {
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
probe=$(curl -s "http://127.0.0.1:$NGINX_PORT/api/v2/emails/bulk" \
	-d '{"messages":[{"reference_id":"0123456789abcdef01234567"}]}')
case $probe in
*'"reference_ids":["0123456789abcdef01234567"]'*) ;;
*) cat "$TMP/nginx/error.log"; mr_die "the bulk stand-in does not answer: $probe" ;;
esac

cat >"$TMP/bench.conf" <<CONF
shared_preload_libraries = 'maileroo'
maileroo.database_name = 'postgres'
maileroo.concurrency = $CONC
shared_buffers = '256MB'
max_wal_size = '4GB'
CONF
mr_start_cluster "$TMP/pg" "$(mr_free_port)" "$TMP/bench.conf"
PSQL=(psql -X -q -At -d postgres)
"${PSQL[@]}" -c 'CREATE EXTENSION maileroo' \
	-c "CREATE SERVER bench FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url 'http://127.0.0.1:$NGINX_PORT/api/v2')" \
	-c "CREATE USER MAPPING FOR PUBLIC SERVER bench OPTIONS (api_key 'bench-key')"
"${PSQL[@]}" -c "CREATE TABLE users AS SELECT i AS id, 'user' || i || '@example.org' AS email, 'User ' || i AS first_name FROM generate_series(1, $N) i"
"${PSQL[@]}" -c "INSERT INTO maileroo_suppressions (address, reason) SELECT 'user' || i || '@example.org', 'manual' FROM generate_series(1, $N, 1000) i"
"${PSQL[@]}" -c "VACUUM ANALYZE"

wait_drained() {
	while [ "$("${PSQL[@]}" -c "SELECT EXISTS (SELECT 1 FROM maileroo_outbox WHERE status IN ('queued', 'retrying') AND campaign_id IS NULL)
			OR EXISTS (SELECT 1 FROM maileroo_outbox WHERE status IN ('queued', 'retrying') AND campaign_id IS NOT NULL)
			OR EXISTS (SELECT 1 FROM maileroo_outbox WHERE status = 'sending')")" = t ]; do
		sleep 0.05
	done
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.1f", a / b; else print "?"}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

campaign_sql="SELECT queued FROM (SELECT array_agg(email ORDER BY id) AS r, array_agg(jsonb_build_object('first_name', first_name) ORDER BY id) AS d FROM users) u, maileroo_send_campaign('Shop <shop@example.com>', 'Spring sale', template_id => 42, recipients => u.r, recipient_data => u.d, tags => '{\"campaign\": \"spring\"}')"
send_sql="SELECT count(maileroo_send_template('Shop <shop@example.com>', email, 'Spring sale', 42, template_data => jsonb_build_object('first_name', first_name), tags => '{\"campaign\": \"spring\"}')) FROM users WHERE id <= $NS"
hz=$(getconf CLK_TCK)

# 1. Queue rate, the campaign beside maileroo_send per recipient.
mr_log "queue rate: $N recipients in one maileroo_send_campaign statement, $NS maileroo_send_template calls, $RUNS runs"
: >"$TMP/queue_c.txt"; : >"$TMP/queue_c_cpu.txt"; : >"$TMP/queue_s.txt"; : >"$TMP/queue_s_cpu.txt"
for r in $(seq 1 "$RUNS"); do
	for kind in c s; do
		if [ $kind = c ]; then sql=$campaign_sql n=$N; else sql=$send_sql n=$NS; fi
		# One session: its backend's CPU ticks around the statement.
		coproc P { "${PSQL[@]}" 2>/dev/null; }
		echo "SELECT pg_backend_pid();" >&"${P[1]}"; read -r bpid <&"${P[0]}"
		echo "BEGIN;" >&"${P[1]}"
		t0=$(cpu_ticks "$bpid")
		echo "SELECT extract(epoch FROM clock_timestamp());" >&"${P[1]}"; read -r w0 <&"${P[0]}"
		echo "$sql;" >&"${P[1]}"; read -r q <&"${P[0]}"
		echo "SELECT extract(epoch FROM clock_timestamp());" >&"${P[1]}"; read -r w1 <&"${P[0]}"
		t1=$(cpu_ticks "$bpid")
		echo "ROLLBACK;" >&"${P[1]}"
		exec {P[1]}>&-
		wait "$P_PID" 2>/dev/null
		awk -v n="$n" -v a="$w0" -v b="$w1" 'BEGIN {printf "%d\n", n / (b - a)}' >>"$TMP/queue_$kind.txt"
		awk -v n="$n" -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN {if (b > a) printf "%d\n", n / ((b - a) / hz); else print 0}' >>"$TMP/queue_${kind}_cpu.txt"
		[ $kind = c ] && [ "$q" != "$((N - N / 1000))" ] && echo "warning: the campaign queued $q"
	done
done
qc=$(median <"$TMP/queue_c.txt") qc_cpu=$(median <"$TMP/queue_c_cpu.txt")
qs=$(median <"$TMP/queue_s.txt") qs_cpu=$(median <"$TMP/queue_s_cpu.txt")
echo "campaign queue runs (recipients/s wall): $(tr '\n' ' ' <"$TMP/queue_c.txt")"
echo "campaign queue runs (recipients/s of backend CPU): $(tr '\n' ' ' <"$TMP/queue_c_cpu.txt")"
echo "maileroo_send_template runs (msg/s wall): $(tr '\n' ' ' <"$TMP/queue_s.txt")"

# 2. Delivery, end to end: commit to the last row recorded as sent.
mr_log "delivery: a committed campaign of $N, and $NS maileroo_send_template messages, $RUNS runs"
pid=$("${PSQL[@]}" -c "SELECT pid FROM maileroo_worker_status()")
: >"$TMP/deliver_c.txt"; : >"$TMP/deliver_s.txt"; : >"$TMP/deliver_c_cpu.txt"; : >"$TMP/deliver_s_cpu.txt"
mem=()
for r in $(seq 1 "$RUNS"); do
	"${PSQL[@]}" -c "TRUNCATE maileroo_outbox"
	w0=$(cpu_ticks "$pid")
	t_commit=$("${PSQL[@]}" -c "BEGIN" -c "$campaign_sql" -c "COMMIT" -c "SELECT clock_timestamp()" | tail -1)
	wait_drained
	w1=$(cpu_ticks "$pid")
	"${PSQL[@]}" -c "SELECT round(count(*) / extract(epoch FROM max(sent_at) - '$t_commit'::timestamptz)) FROM maileroo_outbox" >>"$TMP/deliver_c.txt"
	awk -v n="$((N - N / 1000))" -v a="$w0" -v b="$w1" -v hz="$hz" 'BEGIN {if (b > a) printf "%d\n", n / ((b - a) / hz); else print 0}' >>"$TMP/deliver_c_cpu.txt"
	bad=$("${PSQL[@]}" -c "SELECT count(*) FROM maileroo_outbox WHERE status <> 'sent' OR attempts <> 1")
	[ "$bad" -eq 0 ] || echo "warning: $bad campaign messages not sent in one attempt"
	reqs=$("${PSQL[@]}" -c "SELECT count(DISTINCT sent_at) FROM maileroo_outbox")
	rss=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status")
	"${PSQL[@]}" -c "SELECT pg_log_backend_memory_contexts($pid)" >/dev/null
	sleep 0.5
	total=$(grep "PID $pid\|\[$pid\]" "$TMP/pg/postmaster.log" | grep -o 'Grand total: [0-9]* bytes' | tail -1 | grep -o '[0-9]*')
	mem+=("after campaign run $r ($((r * N)) messages): RssAnon ${rss} kB, contexts ${total:-?} bytes")

	"${PSQL[@]}" -c "TRUNCATE maileroo_outbox"
	w0=$(cpu_ticks "$pid")
	t_commit=$("${PSQL[@]}" -c "BEGIN" -c "$send_sql" -c "COMMIT" -c "SELECT clock_timestamp()" | tail -1)
	wait_drained
	w1=$(cpu_ticks "$pid")
	"${PSQL[@]}" -c "SELECT round(count(*) / extract(epoch FROM max(sent_at) - '$t_commit'::timestamptz)) FROM maileroo_outbox" >>"$TMP/deliver_s.txt"
	awk -v n="$((NS - NS / 1000))" -v a="$w0" -v b="$w1" -v hz="$hz" 'BEGIN {if (b > a) printf "%d\n", n / ((b - a) / hz); else print 0}' >>"$TMP/deliver_s_cpu.txt"
done
dc=$(median <"$TMP/deliver_c.txt") ds=$(median <"$TMP/deliver_s.txt")
dc_cpu=$(median <"$TMP/deliver_c_cpu.txt") ds_cpu=$(median <"$TMP/deliver_s_cpu.txt")
echo "campaign delivery runs (msg/s): $(tr '\n' ' ' <"$TMP/deliver_c.txt")"
echo "per-message delivery runs (msg/s): $(tr '\n' ' ' <"$TMP/deliver_s.txt")"

echo
echo "maileroo campaign benchmark: nginx answering after 20 ms, maileroo.concurrency = $CONC, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  queue, one maileroo_send_campaign of $N:  $qc recipients/s wall, $qc_cpu per backend CPU-second (target 50000)"
echo "  queue, maileroo_send_template per row:    $qs msg/s wall, $qs_cpu per backend CPU-second"
echo "  queue ratio campaign / per row:           $(ratio "$qc" "$qs") wall, $(ratio "$qc_cpu" "$qs_cpu") CPU"
echo "  delivery, campaign of $N, commit to last: $dc msg/s wall, $dc_cpu per worker CPU-second (target 30000)"
echo "  delivery, $NS single messages:           $ds msg/s wall, $ds_cpu per worker CPU-second (ideal at 20 ms: $((CONC * 50)))"
echo "  delivery ratio campaign / single:         $(ratio "$dc" "$ds") wall, $(ratio "$dc_cpu" "$ds_cpu") CPU"
echo "  worker memory:"
for m in "${mem[@]}"; do echo "    $m"; done
