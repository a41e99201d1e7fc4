#!/usr/bin/env bash
# The README's second command, which .ci/run runs too: installs what the
# suite needs (scripts/setup.sh), runs every test of the three modules with
# the race detector, and names any opt-out at the end. A test whose
# dependency is missing fails unless PGXLEAK_SKIP names it
# (PGXLEAK_SKIP=pgbouncer,chromium). Arguments go to go test (-run, -v, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
status=0
go test -race -timeout 15m "$@" ./... ./examples/... ./integration/... || status=$?
if [ -n "${PGXLEAK_SKIP:-}" ]; then
	absent=$(scripts/setup.sh absent)
	if [ -n "$absent" ]; then
		echo "pgxleak: NOT TESTED, on purpose (PGXLEAK_SKIP=$PGXLEAK_SKIP): the tests that need ${absent// /, } skipped"
	else
		echo "pgxleak: PGXLEAK_SKIP=$PGXLEAK_SKIP, but nothing it names is missing: every test ran"
	fi
fi
exit $status
