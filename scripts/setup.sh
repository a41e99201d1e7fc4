#!/usr/bin/env bash
# The set-up behind the README's two commands (scripts/demo.sh and
# scripts/test.sh) and .ci/run, in one place. It installs what is missing
# with apt-get (as root, or through passwordless sudo), starts a local
# PostgreSQL that is installed but stopped, and prints nothing when all is
# there already.
#
#   scripts/setup.sh demo   # the demo: PostgreSQL, unless DATABASE_URL is set or a server listens
#   scripts/setup.sh test   # the suite: a C compiler (for -race), PostgreSQL, pgbouncer, Chromium, Prometheus
#   scripts/setup.sh absent # prints which of the dependencies PGXLEAK_SKIP names are missing
#
# PGXLEAK_SKIP opts out by name (postgres, pgbouncer, chromium, prometheus; comma-
# separated): what it names is not installed, and the tests that need it
# skip instead of failing. Without PostgreSQL running, the demo and the
# tests start throwaway clusters of their own from its binaries.
set -euo pipefail

what=${1:-}
case $what in
demo | test | absent) ;;
*) echo "usage: scripts/setup.sh demo|test|absent" >&2; exit 2 ;;
esac

say() { echo "pgxleak: $*" >&2; }

skip=${PGXLEAK_SKIP:-}
skip=${skip// /}
for name in ${skip//,/ }; do
	case $name in
	postgres | pgbouncer | chromium | prometheus) ;;
	*) say "PGXLEAK_SKIP=$PGXLEAK_SKIP names '$name'; it takes postgres, pgbouncer, chromium and prometheus"; exit 2 ;;
	esac
done
skipped() { [[ ",$skip," == *",$1,"* ]]; }

if ! command -v go >/dev/null; then
	say "no go on PATH: install Go 1.25 or later (https://go.dev/dl/)"
	exit 1
fi

# Each dependency is found where the demo and the tests look for it
# (internal/pgtest, browser_test.go). PGXLEAK_PGTEST_HIDE_LOCAL=1 hides
# what is not on PATH, as it does from them, to simulate a bare machine.
hide=${PGXLEAK_PGTEST_HIDE_LOCAL:-}
have_postgres() {
	command -v initdb >/dev/null || { [ "$hide" != 1 ] && compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }
}
have_pgbouncer() {
	command -v pgbouncer >/dev/null || { [ "$hide" != 1 ] && { [ -x /usr/sbin/pgbouncer ] || [ -x /usr/local/sbin/pgbouncer ]; }; }
}
have_chromium() {
	local b
	for b in "${PGXLEAK_CHROMIUM:-}" chromium chromium-browser google-chrome google-chrome-stable; do
		[ -n "$b" ] && command -v "$b" >/dev/null && return 0
	done
	return 1
}
have_prometheus() { command -v prometheus >/dev/null && command -v promtool >/dev/null; }
have_cc() { command -v "$(go env CC)" >/dev/null; }
# The local server: 127.0.0.1:5432, or PGXLEAK_LOCAL_ADDR (host:port).
local_addr=${PGXLEAK_LOCAL_ADDR:-127.0.0.1:5432}
local_server() { [ "$hide" != 1 ] && (: </dev/tcp/"${local_addr%:*}"/"${local_addr##*:}") 2>/dev/null; }

if [ "$what" = absent ]; then
	absent=()
	for name in ${skip//,/ }; do "have_$name" || absent+=("$name"); done
	echo "${absent[*]}"
	exit 0
fi

missing=()    # Debian packages
optional=()   # the PGXLEAK_SKIP names among them
if [ "$what" = test ] && ! have_cc; then
	missing+=(gcc libc6-dev)
fi
if ! skipped postgres && ! have_postgres; then
	# The demo needs no binaries when it has a server; the suite's private
	# clusters (NewCluster) always do.
	if [ "$what" = test ] || { [ -z "${DATABASE_URL:-}" ] && ! local_server; }; then
		missing+=(postgresql)
		optional+=(postgres)
	fi
fi
if [ "$what" = test ]; then
	skipped pgbouncer || have_pgbouncer || { missing+=(pgbouncer); optional+=(pgbouncer); }
	skipped chromium || have_chromium || { missing+=(chromium); optional+=(chromium); }
	skipped prometheus || have_prometheus || { missing+=(prometheus); optional+=(prometheus); }
fi

if [ ${#missing[@]} -gt 0 ]; then
	sudo=()
	if [ "$(id -u)" != 0 ]; then
		if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
			sudo=(sudo)
		else
			sudo=(cannot)
		fi
	fi
	if [ "${sudo[*]}" = cannot ] || ! command -v apt-get >/dev/null; then
		optout=""
		if [ ${#optional[@]} -gt 0 ]; then
			list=$(IFS=,; echo "${optional[*]}")
			optout="; or opt out with PGXLEAK_SKIP=$list"
			[ "$what" = demo ] && optout="; or set DATABASE_URL"
		fi
		if command -v apt-get >/dev/null; then
			say "missing ${missing[*]}: install them (sudo apt-get install ${missing[*]}) and run this again$optout"
		else
			say "missing ${missing[*]} (Debian package names): install them with your package manager$optout"
		fi
		exit 1
	fi
	say "installing ${missing[*]} (apt-get; once)"
	log=$(mktemp)
	apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q)
	if ! { "${apt[@]}" update && "${apt[@]}" install "${missing[@]}"; } >"$log" 2>&1; then
		tail -n 20 "$log" >&2
		say "apt-get failed (the lines above; the whole log is $log)"
		exit 1
	fi
	rm -f "$log"
	still=()
	if [ "$what" = test ]; then have_cc || still+=("C compiler ($(go env CC))"); fi
	for dep in "${optional[@]}"; do "have_$dep" || still+=("$dep"); done
	if [ ${#still[@]} -gt 0 ]; then
		say "installed ${missing[*]}, and still no ${still[*]}"
		exit 1
	fi
fi

# A local PostgreSQL that is installed but stopped is started (as .ci/run
# always did); without one, the demo and the tests start their own.
if [ -z "${DATABASE_URL:-}" ] && [ "$local_addr" = 127.0.0.1:5432 ] && [ "$hide" != 1 ] &&
	! skipped postgres && command -v pg_lsclusters >/dev/null && ! local_server; then
	sudo=()
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null && sudo -n true 2>/dev/null && sudo=(sudo) || sudo=(cannot)
	fi
	if [ "${sudo[*]}" != cannot ]; then
		pg_lsclusters -h | while read -r version name port status _; do
			if [ "$port" = 5432 ] && [[ $status == down* ]] &&
				"${sudo[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start >/dev/null 2>&1; then
				say "started PostgreSQL $version/$name on port 5432"
			fi
		done
	fi
fi
