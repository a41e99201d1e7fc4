// Package testdriver is the tests' one in-memory database/sql driver,
// shared by the root package's tests and benchmarks and by the integration
// module, as database/sql's own tests share fakedb_test.go.
//
// It imports nothing of pgxleak, so the root package's in-package tests
// can use it too.
package testdriver

import (
	"context"
	"database/sql/driver"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// Connector is an in-memory database/sql driver: no network, no parsing,
// every statement succeeds at once, and every query returns one row with
// one int64 column, n. Its connections implement ExecerContext,
// QueryerContext, ConnBeginTx, SessionResetter and Pinger, like pgx's
// stdlib.Conn (which has no Validator either), and allocate nothing per
// operation, so that what a benchmark measures is database/sql plus
// whatever wraps the driver.
//
// The zero value works. The fields make it hold a connect or a session
// reset, watch for garbage collection, or give its connections a legacy
// method set; the counters say what happened. Use it by pointer.
type Connector struct {
	// Gate, if set, makes Connect wait until it is closed or ctx ends.
	Gate chan struct{}

	// TrackGC counts in Collected the connections garbage-collected.
	TrackGC bool

	// Reset, if set, is what the connections' ResetSession returns; set it
	// while no connection is being checked out.
	Reset func(context.Context) error

	// Legacy, if set, gives the connections only the methods database/sql
	// requires (Prepare, Close, Begin) plus the ones it asks for, and logs
	// every call that reaches them (Calls). It is for testing database/sql's
	// fallbacks, which depend on a method set, not on a value.
	Legacy *Legacy

	// Scanner makes its Rows a driver.RowsColumnScanner, as pgx's are from
	// Go 1.27 on; before Go 1.27 it has no effect (scannerRows is nil).
	Scanner bool

	Attempts   atomic.Int64 // Connect calls
	Opened     atomic.Int64 // connections opened
	Closed     atomic.Int64 // connections closed
	Collected  atomic.Int64 // connections garbage-collected, if TrackGC
	RowsClosed atomic.Int64 // Rows closed

	mu    sync.Mutex
	calls []string // calls that reached Legacy connections
}

// Legacy is what a legacy connection has beyond the methods database/sql
// requires.
type Legacy struct {
	ExecQuery         bool   // the conn has the legacy Execer and Queryer
	NamedValueChecker bool   // the conn has a NamedValueChecker, which converts NVCArg
	ColumnConverter   bool   // statements have a ColumnConverter, which converts CCArg
	OnPrepare         func() // called inside Prepare, if set
}

// NVCArg is converted by a Legacy connection's NamedValueChecker, to
// "nvc<N>"; database/sql's default conversion rejects it.
type NVCArg struct{ N int }

// CCArg is converted by a Legacy statement's ColumnConverter, to "cc<N>";
// database/sql's default conversion rejects it.
type CCArg struct{ N int }

// Connect opens a connection, after Gate if it is set.
func (c *Connector) Connect(ctx context.Context) (driver.Conn, error) {
	c.Attempts.Add(1)
	if c.Gate != nil {
		select {
		case <-c.Gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c.Opened.Add(1)
	if c.Legacy != nil {
		return c.legacyConn(), nil
	}
	mc := &conn{connector: c}
	if c.TrackGC {
		runtime.AddCleanup(mc, func(c *Connector) { c.Collected.Add(1) }, c)
	}
	return mc, nil
}

// Driver returns a driver whose Open connects through c.
func (c *Connector) Driver() driver.Driver { return drv{c} }

// Calls returns the calls that reached c's Legacy connections, in order.
func (c *Connector) Calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

func (c *Connector) logf(format string, args ...any) {
	c.mu.Lock()
	c.calls = append(c.calls, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

type drv struct{ c *Connector }

func (d drv) Open(string) (driver.Conn, error) { return d.c.Connect(context.Background()) }

// conn keeps one Rows, one Tx and one Stmt and hands out pointers to them,
// so that it allocates nothing: database/sql uses a connection from one
// goroutine at a time and closes a Rows before the connection is used
// again.
type conn struct {
	connector *Connector
	rows      rows
	tx        tx
	stmt      stmt
}

var (
	_ driver.ExecerContext   = (*conn)(nil)
	_ driver.QueryerContext  = (*conn)(nil)
	_ driver.ConnBeginTx     = (*conn)(nil)
	_ driver.SessionResetter = (*conn)(nil)
	_ driver.Pinger          = (*conn)(nil)
)

func (c *conn) Prepare(string) (driver.Stmt, error) {
	c.stmt.c = c
	return &c.stmt, nil
}

func (c *conn) Close() error {
	c.connector.Closed.Add(1)
	return nil
}

func (c *conn) Begin() (driver.Tx, error) { return &c.tx, nil } //nolint:staticcheck // the interface requires it

func (c *conn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) { return &c.tx, nil }

func (c *conn) ExecContext(context.Context, string, []driver.NamedValue) (driver.Result, error) {
	return driver.RowsAffected(1), nil
}

func (c *conn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	c.rows = rows{closed: &c.connector.RowsClosed}
	if c.connector.Scanner && scannerRows != nil {
		return scannerRows(&c.rows), nil
	}
	return &c.rows, nil
}

func (c *conn) ResetSession(ctx context.Context) error {
	if c.connector.Reset != nil {
		return c.connector.Reset(ctx)
	}
	return nil
}

func (c *conn) Ping(context.Context) error { return nil }

var columns = []string{"n"}

type rows struct {
	done   bool
	closed *atomic.Int64 // counts Close calls
}

func (r *rows) Columns() []string { return columns }

func (r *rows) Close() error {
	if r.closed != nil {
		r.closed.Add(1)
	}
	return nil
}

// RowsColumnScanner reports whether Connector.Scanner has an effect: from
// Go 1.27 on, whose database/sql has driver.RowsColumnScanner.
func RowsColumnScanner() bool { return scannerRows != nil }

// scannerRows wraps r as a driver.RowsColumnScanner; set from Go 1.27 on
// (scanner_go127.go), nil before.
var scannerRows func(r *rows) driver.Rows

func (r *rows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	dest[0] = int64(1) // small integers are boxed without allocating
	return nil
}

type tx struct{}

func (tx) Commit() error   { return nil }
func (tx) Rollback() error { return nil }

type stmt struct{ c *conn }

func (s *stmt) Close() error  { return nil }
func (s *stmt) NumInput() int { return -1 }

func (s *stmt) Exec([]driver.Value) (driver.Result, error) { //nolint:staticcheck // the interface requires it
	return driver.RowsAffected(1), nil
}

func (s *stmt) Query([]driver.Value) (driver.Rows, error) { //nolint:staticcheck // the interface requires it
	s.c.rows = rows{closed: &s.c.connector.RowsClosed}
	return &s.c.rows, nil
}
