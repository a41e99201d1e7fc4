package testdriver

import (
	"database/sql/driver"
	"fmt"
	"io"
)

// legacyConn returns a connection with the method set c.Legacy asks for.
// ExecQuery wins over NamedValueChecker: no test needs both.
func (c *Connector) legacyConn() driver.Conn {
	lc := &legacyConn{c: c}
	switch {
	case c.Legacy.ExecQuery:
		return legacyExecQueryConn{lc}
	case c.Legacy.NamedValueChecker:
		return legacyNVCConn{lc}
	}
	return lc
}

// legacyConn has only the methods database/sql requires.
type legacyConn struct{ c *Connector }

func (c *legacyConn) Prepare(query string) (driver.Stmt, error) {
	c.c.logf("prepare %s", query)
	if c.c.Legacy.OnPrepare != nil {
		c.c.Legacy.OnPrepare()
	}
	s := &legacyStmt{c: c.c, query: query}
	if c.c.Legacy.ColumnConverter {
		return legacyCCStmt{s}, nil
	}
	return s, nil
}

func (c *legacyConn) Close() error {
	c.c.Closed.Add(1)
	return nil
}

func (c *legacyConn) Begin() (driver.Tx, error) { //nolint:staticcheck // the interface requires it
	c.c.logf("begin")
	return legacyTx{c.c}, nil
}

type legacyExecQueryConn struct{ *legacyConn }

func (c legacyExecQueryConn) Exec(query string, args []driver.Value) (driver.Result, error) { //nolint:staticcheck // the legacy interface under test
	c.c.logf("exec %s %v", query, args)
	return driver.RowsAffected(1), nil
}

func (c legacyExecQueryConn) Query(query string, args []driver.Value) (driver.Rows, error) { //nolint:staticcheck // the legacy interface under test
	c.c.logf("query %s %v", query, args)
	return &legacyRows{}, nil
}

type legacyNVCConn struct{ *legacyConn }

func (c legacyNVCConn) CheckNamedValue(nv *driver.NamedValue) error {
	if a, ok := nv.Value.(NVCArg); ok {
		nv.Value = fmt.Sprintf("nvc%d", a.N)
		return nil
	}
	return driver.ErrSkip
}

type legacyStmt struct {
	c     *Connector
	query string
}

func (s *legacyStmt) Close() error {
	s.c.logf("close %s", s.query)
	return nil
}

func (s *legacyStmt) NumInput() int { return -1 }

func (s *legacyStmt) Exec(args []driver.Value) (driver.Result, error) { //nolint:staticcheck // the legacy interface under test
	s.c.logf("stmt exec %s %v", s.query, args)
	return driver.RowsAffected(1), nil
}

func (s *legacyStmt) Query(args []driver.Value) (driver.Rows, error) { //nolint:staticcheck // the legacy interface under test
	s.c.logf("stmt query %s %v", s.query, args)
	return &legacyRows{}, nil
}

type legacyCCStmt struct{ *legacyStmt }

func (s legacyCCStmt) ColumnConverter(int) driver.ValueConverter { return ccConverter{} }

type ccConverter struct{}

func (ccConverter) ConvertValue(v any) (driver.Value, error) {
	if a, ok := v.(CCArg); ok {
		return fmt.Sprintf("cc%d", a.N), nil
	}
	return driver.DefaultParameterConverter.ConvertValue(v)
}

// legacyRows returns one row with one string column, v.
type legacyRows struct{ done bool }

func (r *legacyRows) Columns() []string { return []string{"v"} }
func (r *legacyRows) Close() error      { return nil }

func (r *legacyRows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	dest[0] = "row"
	return nil
}

type legacyTx struct{ c *Connector }

func (t legacyTx) Commit() error   { t.c.logf("commit"); return nil }
func (t legacyTx) Rollback() error { t.c.logf("rollback"); return nil }
