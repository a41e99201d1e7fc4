// Shared helpers for the live page's tests: pools on real PostgreSQL
// databases (internal/pgtest), and the line a checkout is made at.
package livepage_test

import (
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestMain checks, after the tests passed, that no goroutine leaked: every
// page's sampler stops within one sampling interval (at most a second
// here) of its pool's Close.
func TestMain(m *testing.M) {
	code := pgtest.M(m).Run()
	if code == 0 {
		// goleak retries for about a second; a sampler may sleep as long.
		deadline := time.Now().Add(3 * time.Second)
		err := goleak.Find()
		for err != nil && time.Now().Before(deadline) {
			err = goleak.Find()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
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

// quiet is a logger that drops every record.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// site is a line of code.
type site struct {
	fn   string
	file string
	line int
}

// lineBelow returns the site of the line after the caller's: put it right
// above the call that checks a connection out.
func lineBelow() site {
	pc, file, line, _ := runtime.Caller(1)
	return site{runtime.FuncForPC(pc).Name(), file, line + 1}
}

// String is the site as errors name it: file name and line.
func (s site) String() string { return fmt.Sprintf("%s:%d", filepath.Base(s.file), s.line) }

// short is the site as reports name it: directory, file name and line.
func (s site) short() string {
	return fmt.Sprintf("%s/%s:%d", filepath.Base(filepath.Dir(s.file)), filepath.Base(s.file), s.line)
}
