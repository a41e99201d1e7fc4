package integration_test

// Helpers shared by the integration module's tests. The in-memory driver
// (internal/testdriver), the leak recorder, the checkout-stack harness and
// the Stats/Checkouts/stack helpers (internal/leaktest) are the root
// module's, and so are openTest and TestMain's goroutine check; TestMain
// is a small copy of the root package's, since this module cannot import
// another module's test files.

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestMain checks, after the tests passed, that no pool opened through
// pgxleak has a connection still out and that no goroutine leaked. Tests
// that leak on purpose close their pools; the Tx and Rows goroutines such
// leaks strand inside database/sql are expected.
func TestMain(m *testing.M) {
	pgxleak.VerifyTestMain(testMain{m}, pgxleak.WithGracePeriod(2*time.Second))
}

type testMain struct{ m *testing.M }

func (r testMain) Run() int {
	code := pgtest.M(r.m).Run()
	if code != 0 {
		return code
	}
	if err := leaktest.LeftGoroutines(); err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		return 1
	}
	return 0
}

// openTest opens a tracked pool on a fresh database of its own, and closes
// it when t ends. Reports go to a quiet logger unless opts set one.
var openTest = leaktest.Open

func compatExec(t testing.TB, db *sql.DB, query string, args ...any) {
	t.Helper()
	_, err := db.ExecContext(context.Background(), query, args...)
	require.NoError(t, err, query)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// stats, checkouts and stackString are internal/leaktest's, shared with
// the integration module.
var (
	stats       = leaktest.Stats
	checkouts   = leaktest.Checkouts
	stackString = leaktest.StackString
)
