#!/usr/bin/env bash
# test/bench/send.sh: how fast synchronous sends are, and what connection
# reuse is worth.
#
#   bash test/bench/send.sh [CALLS] [ROUNDS]      (defaults: 2000 calls, 5 rounds)
#
# Starts a throwaway cluster and nginx (with Debian's echo module) on
# 127.0.0.1 answering POST /api/v2/emails at once with a Maileroo success
# envelope, on two ports: one keeps connections alive, the other closes
# each connection after its answer (keepalive_timeout 0), which forces a
# new connection per call.  Each round runs CALLS sequential
# maileroo_send_now() calls in one session against each server, and reads
# nginx's stub_status to count the connections each run opened.  Each round
# also runs the same POSTs from a bare libcurl loop outside the database
# (test/bench/curl_loop.c) on one kept connection: what this machine's
# loopback and nginx allow.  Prints calls per second, the median time per
# call and the connection count of every run, then the medians over the
# rounds, their ratios, and whether the kept-connection rate meets the
# target of 4,000 calls per second.
set -u
. "$(dirname "$0")/../lib.sh"

CALLS=${1:-2000}
ROUNDS=${2:-5}

mr_install_deps nginx libnginx-mod-http-echo
mr_runas_setup

TMP=$(mktemp -d /tmp/maileroo-bench.XXXXXX)
chmod 755 "$TMP"
NGINX_PID=
finish() {
	[ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
	mr_cleanup
	rm -rf "$TMP"
}
trap finish EXIT
trap 'exit 130' INT TERM

mr_log "building"
make -s -C "$MR_TOP" PG_CONFIG="$PG_CONFIG" >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log"; exit 1; }
mr_temp_install "$TMP/install"
export PATH="$MR_BINDIR:$PATH"
# shellcheck disable=SC2046
gcc -O2 -o "$TMP/curl_loop" "$MR_TOP/test/bench/curl_loop.c" $(curl-config --cflags --libs) ||
	mr_die "could not build curl_loop"

# nginx: a fast local stand-in for Maileroo.
KEEP_PORT=$(mr_free_port)
CLOSE_PORT=$(mr_free_port)
mkdir -p "$TMP/nginx"
ANSWER='{"success":true,"message":"The email has been queued for delivery.","data":{"reference_id":"0123456789abcdef01234567"}}'
cat >"$TMP/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
daemon off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $TMP/nginx/body;
	proxy_temp_path $TMP/nginx/proxy;
	fastcgi_temp_path $TMP/nginx/fastcgi;
	uwsgi_temp_path $TMP/nginx/uwsgi;
	scgi_temp_path $TMP/nginx/scgi;
	default_type application/json;
	server {
		listen 127.0.0.1:$KEEP_PORT;
		keepalive_requests 1000000;
		keepalive_timeout 120s;
		location /api/v2/emails { echo '$ANSWER'; }
		location = /status { stub_status; }
	}
	server {
		listen 127.0.0.1:$CLOSE_PORT;
		keepalive_timeout 0;
		location /api/v2/emails { echo '$ANSWER'; }
		location = /status { stub_status; }
	}
}
CONF
nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" >"$TMP/nginx/out.log" 2>&1 &
NGINX_PID=$!
for i in $(seq 1 50); do
	curl -s -o /dev/null "http://127.0.0.1:$KEEP_PORT/status" && break
	sleep 0.1
done
curl -s -o /dev/null "http://127.0.0.1:$KEEP_PORT/status" || { cat "$TMP/nginx/out.log" "$TMP/nginx/error.log"; mr_die "nginx did not start"; }

# stub_status counts accepted connections for the whole nginx.
accepts() { curl -s "http://127.0.0.1:$KEEP_PORT/status" | awk 'NR == 3 {print $1}'; }

cat >"$TMP/pg.conf" <<CONF
shared_preload_libraries = 'maileroo'
CONF
mr_start_cluster "$TMP/pg" "$(mr_free_port)" "$TMP/pg.conf"

psql -X -q -v ON_ERROR_STOP=1 -d postgres <<SQL || mr_die "setup failed"
CREATE EXTENSION maileroo;
CREATE SERVER bench FOREIGN DATA WRAPPER maileroo_fdw OPTIONS (api_url 'http://127.0.0.1:$KEEP_PORT/api/v2');
CREATE USER MAPPING FOR PUBLIC SERVER bench OPTIONS (api_key 'bench-key');
SQL
psql -X -q -v ON_ERROR_STOP=1 -d postgres <<'SQL' || mr_die "setup failed"
-- CALLS sequential sends in this session: total seconds and median ms per call.
CREATE FUNCTION bench(n integer, OUT seconds float8, OUT median_ms float8)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz;
	start timestamptz := clock_timestamp();
	d float8[] := '{}';
BEGIN
	FOR i IN 1..n LOOP
		t0 := clock_timestamp();
		PERFORM maileroo_send_now('Shop <shop@example.com>', 'jane@example.org',
								  'Benchmark', plain => 'Hello');
		d := d || extract(epoch FROM clock_timestamp() - t0)::float8 * 1000;
	END LOOP;
	seconds := extract(epoch FROM clock_timestamp() - start);
	SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) INTO median_ms FROM unnest(d) x;
END $$;
SQL

# run PORT: one session, CALLS calls; prints "rate median_ms connections".
run() {
	local port=$1 before after out
	before=$(accepts)
	out=$(psql -X -q -A -t -F ' ' -d postgres -c "ALTER SERVER bench OPTIONS (SET api_url 'http://127.0.0.1:$port/api/v2')" \
		-c "SELECT $CALLS / seconds, median_ms FROM bench($CALLS)") || mr_die "benchmark query failed"
	after=$(accepts)
	# The status request itself is one connection.
	echo "$out $((after - before - 1))"
}

mr_log "$CALLS sequential maileroo_send_now() calls per run, $ROUNDS rounds"
printf '%-5s  %-26s %12s %12s %12s\n' round mode calls/s "median ms" connections
keep_rates=() close_rates=() keep_meds=() close_meds=() bare_rates=() bare_meds=()
for r in $(seq 1 "$ROUNDS"); do
	line=$(run "$KEEP_PORT") || exit 1
	read -r rate med conns <<<"$line"
	printf '%-5s  %-26s %12.0f %12.3f %12s\n' "$r" "kept connection" "$rate" "$med" "$conns"
	keep_rates+=("$rate") keep_meds+=("$med")
	line=$(run "$CLOSE_PORT") || exit 1
	read -r rate med conns <<<"$line"
	printf '%-5s  %-26s %12.0f %12.3f %12s\n' "$r" "new connection each call" "$rate" "$med" "$conns"
	close_rates+=("$rate") close_meds+=("$med")
	before=$(accepts)
	line=$("$TMP/curl_loop" "http://127.0.0.1:$KEEP_PORT/api/v2/emails" "$CALLS") || exit 1
	read -r rate med <<<"$line"
	printf '%-5s  %-26s %12.0f %12.3f %12s\n' "$r" "bare libcurl loop" "$rate" "$med" "$(($(accepts) - before - 1))"
	bare_rates+=("$rate") bare_meds+=("$med")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
kr=$(median "${keep_rates[@]}") cr=$(median "${close_rates[@]}") br=$(median "${bare_rates[@]}")
km=$(median "${keep_meds[@]}") cm=$(median "${close_meds[@]}") bm=$(median "${bare_meds[@]}")
printf '%-5s  %-26s %12.0f %12.3f\n' median "kept connection" "$kr" "$km"
printf '%-5s  %-26s %12.0f %12.3f\n' median "new connection each call" "$cr" "$cm"
printf '%-5s  %-26s %12.0f %12.3f\n' median "bare libcurl loop" "$br" "$bm"
awk -v k="$kr" -v c="$cr" 'BEGIN {printf "connection reuse: %.2fx the calls per second of a new connection per call\n", k / c}'
awk -v k="$kr" -v b="$br" 'BEGIN {printf "maileroo_send_now: %.0f%% of the bare libcurl loop'"'"'s calls per second\n", 100 * k / b}'
awk -v k="$kr" 'BEGIN {printf "target: at least 4000 calls/s on a kept connection: %s\n", (k >= 4000) ? "meets" : "MISSES"}'

# Memory: one session's resident size after CALLS calls and after 4x CALLS.
rss="(SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmRSS:\s+(\d+)'))[1])"
sends="SELECT count(maileroo_send_now('shop@example.com', 'jane@example.org', 'Benchmark', plain => 'Hello')) FROM generate_series(1, %d)"
read -r rss1 rss2 <<<"$(psql -X -q -A -t -F ' ' -d postgres \
	-c "$(printf "$sends" "$CALLS")" -c "SELECT $rss" \
	-c "$(printf "$sends" $((3 * CALLS)))" -c "SELECT $rss" | sed -n '2p;4p' | tr '\n' ' ')"
echo "backend resident memory: ${rss1} kB after $CALLS calls, ${rss2} kB after $((4 * CALLS))"
