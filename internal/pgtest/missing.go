package pgtest

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// SkipEnv names the environment variable that lists, comma-separated, the
// dependencies whose tests skip on purpose when they are missing:
// PGXLEAK_SKIP=pgbouncer,chromium (the names are the Dep values).
// ./scripts/test.sh installs every dependency it does not name, and
// prints the opt-out at the end of the run.
const SkipEnv = "PGXLEAK_SKIP"

// Dep is a dependency of the tests that SkipEnv can name.
type Dep string

// The dependencies SkipEnv can name.
const (
	DepPostgres  Dep = "postgres"  // a server: DATABASE_URL, the local one, or the binaries for a private cluster
	DepPgBouncer Dep = "pgbouncer" // the pgbouncer binary, for the PgBouncer tests
	DepChromium  Dep = "chromium"  // a headless Chromium, for the live page's browser test
	// DepPrometheus is Debian's prometheus (with promtool), for the fleet
	// test and the alert rules' tests (examples/fleetsvc).
	DepPrometheus Dep = "prometheus"
)

// deps names each dependency for people, and says how to get it besides
// ./scripts/test.sh.
var deps = map[Dep]struct{ name, howToGet string }{
	DepPostgres:   {"PostgreSQL", "install it (apt-get install postgresql) or set DATABASE_URL"},
	DepPgBouncer:  {"pgbouncer", "install it (apt-get install pgbouncer)"},
	DepChromium:   {"Chromium", "install it (apt-get install chromium) or set PGXLEAK_CHROMIUM to its binary"},
	DepPrometheus: {"Prometheus", "install it (apt-get install prometheus, which brings promtool)"},
}

// OptedOut reports whether SkipEnv names dep.
func OptedOut(dep Dep) bool {
	for _, name := range strings.Split(os.Getenv(SkipEnv), ",") {
		if Dep(strings.TrimSpace(name)) == dep {
			return true
		}
	}
	return false
}

// Missing ends t, which needs dep and cannot have it (err says why). When
// SkipEnv names dep, t skips, saying so. Otherwise the first test of the
// process that misses dep fails with err and what to do, and the others
// skip: the run has failed already, and one line is enough.
func Missing(t testing.TB, dep Dep, err error) {
	t.Helper()
	if OptedOut(dep) {
		t.Skipf("pgtest: no %s (%v); skipped on purpose: %s names %s", deps[dep].name, err, SkipEnv, dep)
	}
	failOnce(t, deps[dep].name, fmt.Sprintf("pgtest: no %s for this test: %v. ./scripts/test.sh installs it; or %s; or set %s=%s to skip these tests on purpose",
		deps[dep].name, err, deps[dep].howToGet, SkipEnv, dep))
}

// failed holds the dependencies a test of this process already failed for.
var failed sync.Map

// failOnce fails t with msg if no test failed for what before, and skips it
// otherwise.
func failOnce(t testing.TB, what, msg string) {
	t.Helper()
	if _, again := failed.LoadOrStore(what, true); again {
		t.Skipf("pgtest: no %s; the run has failed for it already", what)
	}
	t.Fatal(msg)
}
