package pgxleak_test

import (
	"context"
	"database/sql/driver"
	"io"
	"runtime"
	"sync/atomic"
)

// fakeConnector is the tests' one in-memory database/sql driver: no
// network, every statement succeeds at once, and every query returns one
// row with one int64 column. Its connections implement ExecerContext,
// QueryerContext, ConnBeginTx, SessionResetter and Pinger, like pgx's
// stdlib.Conn (which has no Validator either). The zero value works; the
// fields make it hold a connect or a session reset, or count what happened. (The benchmarks
// keep their own driver, whose only job is to allocate nothing.)
type fakeConnector struct {
	gate    chan struct{} // if set, Connect waits until it is closed or ctx ends
	trackGC bool          // count connections garbage-collected in collected
	// scanner makes its Rows a driver.RowsColumnScanner (see
	// scannerRows): Go 1.27 on only.
	scanner bool

	// reset, if set, is what the connections' ResetSession returns; set it
	// while no connection is being checked out.
	reset func(context.Context) error

	attempts   atomic.Int64 // Connect calls
	opened     atomic.Int64 // connections opened
	closed     atomic.Int64 // connections closed
	collected  atomic.Int64 // connections garbage-collected, if trackGC
	rowsClosed atomic.Int64 // Rows closed
}

func (c *fakeConnector) Connect(ctx context.Context) (driver.Conn, error) {
	c.attempts.Add(1)
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c.opened.Add(1)
	fc := &fakeConn{connector: c}
	if c.trackGC {
		runtime.AddCleanup(fc, func(c *fakeConnector) { c.collected.Add(1) }, c)
	}
	return fc, nil
}

func (c *fakeConnector) Driver() driver.Driver { return fakeDriver{c} }

type fakeDriver struct{ c *fakeConnector }

func (d fakeDriver) Open(string) (driver.Conn, error) { return d.c.Connect(context.Background()) }

// fakeConn keeps one Rows, one Tx and one Stmt and hands out pointers to
// them: database/sql uses a connection from one goroutine at a time and
// closes a Rows before the connection is used again.
type fakeConn struct {
	connector *fakeConnector
	rows      fakeRows
	tx        fakeTx
	stmt      fakeStmt
}

var (
	_ driver.ExecerContext   = (*fakeConn)(nil)
	_ driver.QueryerContext  = (*fakeConn)(nil)
	_ driver.ConnBeginTx     = (*fakeConn)(nil)
	_ driver.SessionResetter = (*fakeConn)(nil)
	_ driver.Pinger          = (*fakeConn)(nil)
)

func (c *fakeConn) Prepare(string) (driver.Stmt, error) {
	c.stmt.c = c
	return &c.stmt, nil
}

func (c *fakeConn) Close() error {
	c.connector.closed.Add(1)
	return nil
}

func (c *fakeConn) Begin() (driver.Tx, error) { return &c.tx, nil } //nolint:staticcheck // the interface requires it

func (c *fakeConn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) { return &c.tx, nil }

func (c *fakeConn) ExecContext(context.Context, string, []driver.NamedValue) (driver.Result, error) {
	return driver.RowsAffected(1), nil
}

func (c *fakeConn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	c.rows = fakeRows{closed: &c.connector.rowsClosed}
	if c.connector.scanner {
		return scannerRows(&c.rows), nil
	}
	return &c.rows, nil
}

func (c *fakeConn) ResetSession(ctx context.Context) error {
	if c.connector.reset != nil {
		return c.connector.reset(ctx)
	}
	return nil
}

func (c *fakeConn) Ping(context.Context) error { return nil }

var fakeColumns = []string{"n"}

type fakeRows struct {
	done   bool
	closed *atomic.Int64 // if set, counts Close calls
}

func (r *fakeRows) Columns() []string { return fakeColumns }

func (r *fakeRows) Close() error {
	if r.closed != nil {
		r.closed.Add(1)
	}
	return nil
}

// scannerRows wraps r as a driver.RowsColumnScanner; set from Go 1.27 on
// (fake_go127_test.go), nil before.
var scannerRows func(r *fakeRows) driver.Rows

func (r *fakeRows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	dest[0] = int64(1)
	return nil
}

type fakeTx struct{}

func (fakeTx) Commit() error   { return nil }
func (fakeTx) Rollback() error { return nil }

type fakeStmt struct{ c *fakeConn }

func (s *fakeStmt) Close() error  { return nil }
func (s *fakeStmt) NumInput() int { return -1 }

func (s *fakeStmt) Exec([]driver.Value) (driver.Result, error) { //nolint:staticcheck // the interface requires it
	return driver.RowsAffected(1), nil
}

func (s *fakeStmt) Query([]driver.Value) (driver.Rows, error) { //nolint:staticcheck // the interface requires it
	s.c.rows = fakeRows{closed: &s.c.connector.rowsClosed}
	return &s.c.rows, nil
}
