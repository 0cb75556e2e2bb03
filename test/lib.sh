# test/lib.sh: shell helpers shared by test/run and test/demo.
#
# They install what is missing (as root, through apt), build the extension
# into a throwaway install tree or the system, and start and stop a
# throwaway PostgreSQL cluster and the mock Maileroo server.  Everything
# started is recorded so that mr_cleanup can stop it on any exit.

MR_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MR_PIDS=()
MR_CLUSTERS=()

mr_log() { printf '== %s\n' "$*"; }
mr_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Install the Debian packages named in $@ that are not installed yet.
mr_apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		mr_die "missing packages: ${missing[*]} (install them, or run as root)"
	fi
	mr_log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Build and test dependencies.  PG_MAJOR picks the server version.
mr_install_deps() {
	PG_MAJOR=${PG_MAJOR:-$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)}
	PG_MAJOR=${PG_MAJOR:-15}
	mr_apt_install make gcc libc6-dev curl ca-certificates python3 perl libipc-run-perl \
		"postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" libcurl4-openssl-dev "$@"
	PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}
	export PG_CONFIG
	# PGXS compiles LLVM bitcode when the server was built with it.
	local clang
	clang=$(sed -n 's/^CLANG *= *//p' "$($PG_CONFIG --pgxs | xargs dirname)/../Makefile.global")
	if [ -n "$clang" ] && [ ! -x "$clang" ]; then
		mr_apt_install "$(basename "$clang")" "llvm-$(basename "$clang" | sed 's/clang-//')"
	fi
	PG_BINDIR=$($PG_CONFIG --bindir)
}

# Node.js (18 or later) and npm, for the example webhook receiver under
# examples/.  Installs Debian's packages when either is missing; returns
# non-zero, leaving the reason in MR_NODE_MISSING, when none can be had (the
# callers then skip what needs them).
mr_install_node() {
	local pkgs=() major
	command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
	command -v npm >/dev/null 2>&1 || pkgs+=(npm)
	if [ ${#pkgs[@]} -gt 0 ]; then
		(mr_apt_install "${pkgs[@]}") || true
	fi
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
		MR_NODE_MISSING="node and npm are not installed and could not be installed"
		return 1
	fi
	major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null)
	if [ "${major:-0}" -lt 18 ]; then
		MR_NODE_MISSING="node $(node --version 2>/dev/null) is older than 18"
		return 1
	fi
}

# A user that may run the server: initdb refuses root.
mr_runas_setup() {
	if [ "$(id -u)" -eq 0 ]; then
		MR_USER=postgres
		id "$MR_USER" >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql "$MR_USER"
		MR_AS=(runuser -u "$MR_USER" --)
	else
		MR_USER=$(id -un)
		MR_AS=()
	fi
}

mr_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Copy the server's install tree under $1 and install the extension into
# it, so that tests never touch (or depend on) the system installation.
mr_temp_install() {
	local dest=$1 libdir sharedir
	libdir=$($PG_CONFIG --pkglibdir)
	sharedir=$($PG_CONFIG --sharedir)
	mkdir -p "$dest$(dirname "$PG_BINDIR")" "$dest$(dirname "$sharedir")"
	cp -a "$(dirname "$PG_BINDIR")/." "$dest$(dirname "$PG_BINDIR")/"
	[ -d "$dest$libdir" ] || cp -a "$libdir" "$dest$libdir"
	cp -a "$sharedir" "$dest$(dirname "$sharedir")/"
	make -s -C "$MR_TOP" install DESTDIR="$dest" PG_CONFIG="$PG_CONFIG" >/dev/null
	MR_BINDIR=$dest$PG_BINDIR
	# Citus too, when its archive is at hand (test/t/040_citus.pl uses it).
	if mr_citus_archive >/dev/null 2>&1; then
		tar -C "$dest" -xJf "$(mr_citus_archive)" || mr_die "cannot unpack $(mr_citus_archive)"
	fi
}

# The Citus build for this server's major version: $MAILEROO_CITUS (the
# archive, or the directory that holds it), else shared/citus beside the
# repository's directory (or its parent's, for a git worktree).  Prints its
# path, or on stderr why there is none.
mr_citus_archive() {
	local major f d dirs
	major=$($PG_CONFIG --version | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')
	if [ -n "${MAILEROO_CITUS:-}" ]; then
		[ -f "$MAILEROO_CITUS" ] && { echo "$MAILEROO_CITUS"; return 0; }
		dirs=("$MAILEROO_CITUS")
	else
		dirs=("$MR_TOP/../shared/citus" "$MR_TOP/../../shared/citus")
	fi
	for d in "${dirs[@]}"; do
		for f in "$d"/citus-*-pg"$major"-*.tar.xz; do
			[ -f "$f" ] && { echo "$f"; return 0; }
		done
	done
	echo "no Citus archive for PostgreSQL $major (citus-*-pg$major-*.tar.xz) in ${dirs[*]}; set MAILEROO_CITUS to its path" >&2
	return 1
}

# mr_start_mock DIR: start the mock Maileroo API; sets MAILEROO_MOCK_URL.
mr_start_mock() {
	local dir=$1 i
	python3 "${MAILEROO_MOCK_SCRIPT:-$MR_TOP/test/mock/maileroo_mock.py}" --host 127.0.0.1 --port 0 \
		--port-file "$dir/mock.port" --log "$dir/mock.log" \
		${MAILEROO_MOCK_ARGS:-} >"$dir/mock.out" 2>&1 &
	MR_PIDS+=($!)
	for i in $(seq 1 100); do
		[ -s "$dir/mock.port" ] && break
		sleep 0.1
	done
	[ -s "$dir/mock.port" ] || { cat "$dir/mock.out"; mr_die "mock Maileroo server did not start"; }
	MAILEROO_MOCK_URL="http://127.0.0.1:$(cat "$dir/mock.port")"
	export MAILEROO_MOCK_URL
}

# mr_start_cluster DIR PORT CONF [WRAPPER...]: initdb and start a cluster
# whose socket lives in DIR; CONF is appended to postgresql.conf.
mr_start_cluster() {
	local dir=$1 port=$2 conf=$3
	shift 3
	mkdir -p "$dir/sock"
	[ -n "${MR_USER:-}" ] && chown -R "$MR_USER" "$dir"
	"${MR_AS[@]}" "$MR_BINDIR/initdb" -D "$dir/data" -U postgres -A trust \
		--no-sync -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log"; mr_die "initdb failed"; }
	{
		echo "port = $port"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$dir/sock'"
		echo "fsync = off"
		cat "$conf"
	} >>"$dir/data/postgresql.conf"
	if [ $# -gt 0 ]; then
		# Started by hand so that a wrapper such as valgrind sees it.
		"${MR_AS[@]}" "$@" "$MR_BINDIR/postgres" -D "$dir/data" >"$dir/postmaster.log" 2>&1 &
		local i pid=$!
		for i in $(seq 1 600); do
			"$MR_BINDIR/pg_isready" -q -h "$dir/sock" -p "$port" && break
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
	else
		"${MR_AS[@]}" "$MR_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/postmaster.log" \
			-w -t 120 start >/dev/null || { cat "$dir/postmaster.log"; mr_die "server did not start"; }
	fi
	"$MR_BINDIR/pg_isready" -q -h "$dir/sock" -p "$port" ||
		{ cat "$dir/postmaster.log"; mr_die "server did not start"; }
	MR_CLUSTERS+=("$dir/data")
	export PGHOST="$dir/sock" PGPORT="$port" PGUSER=postgres
}

mr_cleanup() {
	local d p
	for d in "${MR_CLUSTERS[@]}"; do
		"${MR_AS[@]}" "$MR_BINDIR/pg_ctl" -D "$d" -m fast -w -t 60 stop >/dev/null 2>&1 ||
			"${MR_AS[@]}" "$MR_BINDIR/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
	done
	for p in "${MR_PIDS[@]}"; do
		kill "$p" 2>/dev/null
	done
	for p in "${MR_PIDS[@]}"; do
		wait "$p" 2>/dev/null
	done
	MR_CLUSTERS=()
	MR_PIDS=()
}
