package pgxleak

import (
	"context"
	"database/sql/driver"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak/internal/optional"
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

// execerOnly and queryerOnly have only the legacy Execer or Queryer,
// which the wrappers fold into the context variants.
type (
	execerOnly  struct{ driver.Conn }
	queryerOnly struct{ driver.Conn }
)

func (execerOnly) Exec(string, []driver.Value) (driver.Result, error) { return nil, nil }
func (queryerOnly) Query(string, []driver.Value) (driver.Rows, error) { return nil, nil }

// checkRules checks one wrapper against the list of optional interfaces:
// an Exact interface is implemented if and only if its bit is in mask m,
// an Always one always, a Folded one never.
func checkRules(t *testing.T, kind string, m int, w any) {
	t.Helper()
	exact := 0
	for _, i := range optional.Of(kind) {
		got := reflect.TypeOf(w).Implements(i.Type)
		want := false
		switch i.Rule {
		case optional.Exact:
			want = m&(1<<exact) != 0
			exact++
		case optional.Always:
			want = true
		}
		assert.Equal(t, want, got, "%s wrapper %b implements %s (%s)", kind, m, i.Name(), i.Rule)
	}
}

// TestGeneratedWrappersExact checks every generated combination: the
// wrapper for mask m implements exactly the Exact optional interfaces in
// m, every Always one (driver.Validator among them), and no Folded one.
func TestGeneratedWrappersExact(t *testing.T) {
	cfg, err := newConfig(nil)
	require.NoError(t, err)
	p := newPool(cfg, "test")
	t.Cleanup(p.close)
	c := &conn{connState: connState{pool: p}, inner: fullConn{}}
	require.Len(t, connWrappers, 1<<len(optional.ExactOf("conn")), "a conn wrapper per set of exact interfaces: regenerate")
	for m := range len(connWrappers) {
		w := connWrappers[m](c)
		require.Equal(t, m, connMask(w), "conn wrapper %04b's mask", m)
		checkRules(t, "conn", m, w)
		require.Implements(t, (*driver.Validator)(nil), w, "conn wrapper %04b", m)
		u, ok := w.(interface{ Unwrap() driver.Conn })
		require.True(t, ok, "conn wrapper %04b does not unwrap", m)
		require.Equal(t, fullConn{}, u.Unwrap(), "conn wrapper %04b does not unwrap", m)
	}
	// A legacy method alone sets its context variant's bit.
	assert.Equal(t, 1<<0, connMask(execerOnly{}), "connMask(Execer only): the ExecerContext bit")
	assert.Equal(t, 1<<1, connMask(queryerOnly{}), "connMask(Queryer only): the QueryerContext bit")
	s := &stmt{inner: fullStmt{}, c: c}
	require.Len(t, stmtWrappers, 1<<len(optional.ExactOf("stmt")), "a stmt wrapper per set of exact interfaces: regenerate")
	for m := range len(stmtWrappers) {
		w := stmtWrappers[m](s)
		require.Equal(t, m, stmtMask(w), "stmt wrapper %b's mask", m)
		checkRules(t, "stmt", m, w)
	}
	require.Len(t, rowsWrappers, 1<<len(optional.ExactOf("rows")), "a rows wrapper per set of exact interfaces: regenerate")
	for m := range len(rowsWrappers) {
		w, r := rowsWrappers[m](rows{inner: fullRows{}, c: c})
		require.Equal(t, m, rowsMask(w), "rows wrapper %07b's mask", m)
		checkRules(t, "rows", m, w)
		require.Equal(t, fullRows{}, r.inner, "rows wrapper %07b lost its inner rows", m)
	}
}
