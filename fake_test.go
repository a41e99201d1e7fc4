package pgxleak_test

import (
	"context"
	"database/sql/driver"
	"io"
	"runtime"
	"sync/atomic"
)

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
