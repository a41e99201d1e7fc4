package integration_test

// Helpers shared by the integration module's tests, copied from the root
// package's tests (main_test.go, compat_pgx_test.go, bench_test.go,
// fakedriver_test.go): this module cannot import another module's test
// files.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/stack"
)

// TestMain checks, after the tests passed, that no pool opened through
// pgxleak has a connection still out and that no goroutine leaked. Tests
// that leak on purpose close their pools; the Tx and Rows goroutines such
// leaks strand inside database/sql are expected.
func TestMain(m *testing.M) {
	pgxleak.VerifyTestMain(testMain{m}, pgxleak.GracePeriod(2*time.Second))
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
	opts = append([]pgxleak.Option{pgxleak.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)
	db, err := pgxleak.Open("pgx", dsn, opts...)
	if err != nil {
		t.Fatalf("pgxleak.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db, dsn
}

// leakRecorder collects leak reports for assertions.
type leakRecorder struct {
	mu    sync.Mutex
	leaks []pgxleak.Leak
	added chan struct{}
}

func newLeakRecorder() *leakRecorder { return &leakRecorder{added: make(chan struct{}, 1000)} }

func (r *leakRecorder) option() pgxleak.Option {
	return pgxleak.WithOnLeak(func(l pgxleak.Leak) {
		r.mu.Lock()
		r.leaks = append(r.leaks, l)
		r.mu.Unlock()
		select {
		case r.added <- struct{}{}:
		default:
		}
	})
}

func (r *leakRecorder) all() []pgxleak.Leak {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pgxleak.Leak(nil), r.leaks...)
}

// wait returns the first report matching match, failing t after timeout.
func (r *leakRecorder) wait(t testing.TB, timeout time.Duration, match func(pgxleak.Leak) bool) pgxleak.Leak {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		for _, l := range r.all() {
			if match(l) {
				return l
			}
		}
		select {
		case <-r.added:
		case <-ctx.Done():
			t.Fatalf("no matching leak report within %v; got %v", timeout, r.all())
		}
	}
}

func compatExec(t testing.TB, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// memConnector is a tiny in-memory database/sql driver for the benchmarks:
// no network, no parsing, and no allocation per operation, so that what a
// benchmark measures is database/sql plus whatever wraps the driver.
// Connections implement ExecerContext, QueryerContext, ConnBeginTx,
// SessionResetter and Pinger, like pgx's stdlib.Conn (which has no
// Validator either). Every query returns one row with one int64 column.
type memConnector struct {
	opened    atomic.Int64 // connections opened
	closed    atomic.Int64 // connections closed
	collected atomic.Int64 // connections garbage-collected, if trackGC
	trackGC   bool
}

func (c *memConnector) Connect(context.Context) (driver.Conn, error) {
	c.opened.Add(1)
	mc := &memConn{connector: c}
	if c.trackGC {
		runtime.AddCleanup(mc, func(c *memConnector) { c.collected.Add(1) }, c)
	}
	return mc, nil
}

func (c *memConnector) Driver() driver.Driver { return memDriver{c} }

type memDriver struct{ c *memConnector }

func (d memDriver) Open(string) (driver.Conn, error) { return d.c.Connect(context.Background()) }

// memConn keeps one Rows and one Tx and hands out pointers to them:
// database/sql uses a connection from one goroutine at a time and closes
// a Rows before the connection is used again.
type memConn struct {
	connector *memConnector
	rows      memRows
	tx        memTx
	stmt      memStmt
}

var (
	_ driver.ExecerContext   = (*memConn)(nil)
	_ driver.QueryerContext  = (*memConn)(nil)
	_ driver.ConnBeginTx     = (*memConn)(nil)
	_ driver.SessionResetter = (*memConn)(nil)
	_ driver.Pinger          = (*memConn)(nil)
)

func (c *memConn) Prepare(string) (driver.Stmt, error) {
	c.stmt.c = c
	return &c.stmt, nil
}

func (c *memConn) Close() error {
	c.connector.closed.Add(1)
	return nil
}

func (c *memConn) Begin() (driver.Tx, error) { return &c.tx, nil } //nolint:staticcheck // the interface requires it

func (c *memConn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) { return &c.tx, nil }

func (c *memConn) ExecContext(context.Context, string, []driver.NamedValue) (driver.Result, error) {
	return driver.RowsAffected(1), nil
}

func (c *memConn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	c.rows = memRows{}
	return &c.rows, nil
}

func (c *memConn) ResetSession(context.Context) error { return nil }
func (c *memConn) Ping(context.Context) error         { return nil }

var memColumns = []string{"n"}

type memRows struct{ done bool }

func (r *memRows) Columns() []string { return memColumns }
func (r *memRows) Close() error      { return nil }

func (r *memRows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	dest[0] = int64(1) // small integers are boxed without allocating
	return nil
}

type memTx struct{}

func (memTx) Commit() error   { return nil }
func (memTx) Rollback() error { return nil }

type memStmt struct{ c *memConn }

func (s *memStmt) Close() error  { return nil }
func (s *memStmt) NumInput() int { return -1 }

func (s *memStmt) Exec([]driver.Value) (driver.Result, error) { //nolint:staticcheck // the interface requires it
	return driver.RowsAffected(1), nil
}

func (s *memStmt) Query([]driver.Value) (driver.Rows, error) { //nolint:staticcheck // the interface requires it
	s.c.rows = memRows{}
	return &s.c.rows, nil
}

// stats returns pgxleak.Stats(db), failing t if db is not a pgxleak pool.
func stats(t testing.TB, db *sql.DB) pgxleak.PoolStats {
	t.Helper()
	s, err := pgxleak.Stats(db)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkouts returns pgxleak.Checkouts(db), failing t if db is not a
// pgxleak pool.
func checkouts(t testing.TB, db *sql.DB) []pgxleak.Checkout {
	t.Helper()
	cs, err := pgxleak.Checkouts(db)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// stackString renders frames as LeakError and the live page do, like a
// goroutine's stack in a panic.
func stackString(fs []pgxleak.Frame) string {
	out := make([]stack.Frame, len(fs))
	for i, f := range fs {
		out[i] = stack.Frame(f)
	}
	return stack.Format(out)
}
