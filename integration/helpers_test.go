package integration_test

// Helpers shared by the integration module's tests. The in-memory driver
// (internal/testdriver), the leak recorder, the checkout-stack harness and
// the Stats/Checkouts/stack helpers (internal/leaktest) are the root
// module's; TestMain and openTest are small copies of the root package's,
// since this module cannot import another module's test files.

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
	"go.uber.org/goleak"

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
	if err := goleak.Find(
		goleak.IgnoreTopFunction("database/sql.(*Tx).awaitDone"),
		goleak.IgnoreTopFunction("database/sql.(*Rows).awaitDone"),
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"), // pools leaked on purpose
	); err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		return 1
	}
	return 0
}

// openTest opens a tracked pool on a fresh database of its own, and closes
// it when t ends. Reports go to a quiet logger unless opts set one.
func openTest(t testing.TB, opts ...pgxleak.Option) (*sql.DB, string) {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	opts = append([]pgxleak.Option{pgxleak.WithLogger(quiet)}, opts...)
	db, err := pgxleak.Open("pgx", dsn, opts...)
	require.NoError(t, err, "pgxleak.Open")
	t.Cleanup(func() { _ = db.Close() })
	return db, dsn
}

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
