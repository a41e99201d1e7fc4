package pgxleak

import (
	"context"
	"database/sql/driver"
	"reflect"
	"testing"
)

// fullConn implements every optional interface, so every generated wrapper
// can be built over it.
type fullConn struct{}

func (fullConn) Prepare(string) (driver.Stmt, error) { return fullStmt{}, nil }
func (fullConn) Close() error                        { return nil }
func (fullConn) Begin() (driver.Tx, error)           { return nil, nil }
func (fullConn) Ping(context.Context) error          { return nil }
func (fullConn) Exec(string, []driver.Value) (driver.Result, error) {
	return nil, nil
}
func (fullConn) ExecContext(context.Context, string, []driver.NamedValue) (driver.Result, error) {
	return nil, nil
}
func (fullConn) Query(string, []driver.Value) (driver.Rows, error) { return nil, nil }
func (fullConn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	return nil, nil
}
func (fullConn) PrepareContext(context.Context, string) (driver.Stmt, error) { return nil, nil }
func (fullConn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) {
	return nil, nil
}
func (fullConn) CheckNamedValue(*driver.NamedValue) error { return nil }
func (fullConn) ResetSession(context.Context) error       { return nil }

type fullStmt struct{}

func (fullStmt) Close() error                               { return nil }
func (fullStmt) NumInput() int                              { return 0 }
func (fullStmt) Exec([]driver.Value) (driver.Result, error) { return nil, nil }
func (fullStmt) Query([]driver.Value) (driver.Rows, error)  { return nil, nil }
func (fullStmt) CheckNamedValue(*driver.NamedValue) error   { return nil }
func (fullStmt) ColumnConverter(int) driver.ValueConverter  { return nil }
func (fullStmt) ExecContext(context.Context, []driver.NamedValue) (driver.Result, error) {
	return nil, nil
}
func (fullStmt) QueryContext(context.Context, []driver.NamedValue) (driver.Rows, error) {
	return nil, nil
}

type fullRows struct{}

func (fullRows) Columns() []string                                 { return nil }
func (fullRows) Close() error                                      { return nil }
func (fullRows) Next([]driver.Value) error                         { return nil }
func (fullRows) HasNextResultSet() bool                            { return false }
func (fullRows) NextResultSet() error                              { return nil }
func (fullRows) ColumnTypeScanType(int) reflect.Type               { return nil }
func (fullRows) ColumnTypeDatabaseTypeName(int) string             { return "" }
func (fullRows) ColumnTypeLength(int) (int64, bool)                { return 0, false }
func (fullRows) ColumnTypeNullable(int) (bool, bool)               { return false, false }
func (fullRows) ColumnTypePrecisionScale(int) (int64, int64, bool) { return 0, 0, false }

// TestGeneratedWrappersExact checks every generated combination: the
// wrapper for mask m implements exactly the optional interfaces in m, and
// always driver.Validator.
func TestGeneratedWrappersExact(t *testing.T) {
	cfg, err := newConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := newTracker(cfg, "test")
	t.Cleanup(p.close)
	c := &conn{connState: connState{tracker: p}, inner: fullConn{}}
	for m := range len(connWrappers) {
		w := connWrappers[m](c)
		if got := connMask(w); got != m {
			t.Fatalf("conn wrapper %09b implements %09b", m, got)
		}
		if _, ok := w.(driver.Validator); !ok {
			t.Fatalf("conn wrapper %09b is not a driver.Validator", m)
		}
		if u, ok := w.(interface{ Unwrap() driver.Conn }); !ok || u.Unwrap() != (fullConn{}) {
			t.Fatalf("conn wrapper %09b does not unwrap", m)
		}
	}
	s := &stmt{inner: fullStmt{}, c: c}
	for m := range len(stmtWrappers) {
		if got := stmtMask(stmtWrappers[m](s)); got != m {
			t.Fatalf("stmt wrapper %04b implements %04b", m, got)
		}
	}
	for m := range len(rowsWrappers) {
		w, r := rowsWrappers[m](rows{inner: fullRows{}, c: c})
		if got := rowsMask(w); got != m {
			t.Fatalf("rows wrapper %06b implements %06b", m, got)
		}
		if r.inner != (fullRows{}) {
			t.Fatalf("rows wrapper %06b lost its inner rows", m)
		}
	}
}
