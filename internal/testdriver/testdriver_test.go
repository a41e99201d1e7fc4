package testdriver_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// TestConnectorAllocatesNothing: a statement, a query and a transaction on
// a connection allocate nothing in the driver, so that the benchmarks
// measure database/sql and whatever wraps it.
func TestConnectorAllocatesNothing(t *testing.T) {
	ctx := context.Background()
	c := &testdriver.Connector{}
	conn, err := c.Connect(ctx)
	require.NoError(t, err)
	dest := make([]driver.Value, 1)
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = conn.(driver.ExecerContext).ExecContext(ctx, "UPDATE t SET n = 1", nil)
		rows, _ := conn.(driver.QueryerContext).QueryContext(ctx, "SELECT n FROM t", nil)
		_ = rows.Next(dest)
		_ = rows.Close()
		tx, _ := conn.(driver.ConnBeginTx).BeginTx(ctx, driver.TxOptions{})
		_ = tx.Commit()
		_ = conn.(driver.SessionResetter).ResetSession(ctx)
	})
	assert.Zero(t, allocs)
	require.NoError(t, conn.Close())
	assert.Equal(t, int64(1), c.Opened.Load())
	assert.Equal(t, int64(1), c.Closed.Load())
}

// TestConnectorOneRow: every query returns one row holding 1, through
// database/sql.
func TestConnectorOneRow(t *testing.T) {
	db := sql.OpenDB(&testdriver.Connector{})
	defer db.Close()
	rows, err := db.Query("SELECT n FROM t")
	require.NoError(t, err)
	defer rows.Close()
	var got []int64
	for rows.Next() {
		var n int64
		require.NoError(t, rows.Scan(&n))
		got = append(got, n)
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, []int64{1}, got)
}

// TestConnectorLegacyMethodSet: a Legacy connection has only the methods
// database/sql requires and those asked for, and logs the calls.
func TestConnectorLegacyMethodSet(t *testing.T) {
	for _, tc := range []struct {
		name           string
		legacy         testdriver.Legacy
		execQuery, nvc bool
	}{
		{"minimal", testdriver.Legacy{}, false, false},
		{"Execer and Queryer", testdriver.Legacy{ExecQuery: true}, true, false},
		{"NamedValueChecker", testdriver.Legacy{NamedValueChecker: true}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &testdriver.Connector{Legacy: &tc.legacy}
			conn, err := c.Connect(context.Background())
			require.NoError(t, err)
			//lint:ignore SA1019 the legacy interface under test
			_, execer := conn.(driver.Execer)
			//lint:ignore SA1019 the legacy interface under test
			_, queryer := conn.(driver.Queryer)
			_, nvc := conn.(driver.NamedValueChecker)
			assert.Equal(t, tc.execQuery, execer)
			assert.Equal(t, tc.execQuery, queryer)
			assert.Equal(t, tc.nvc, nvc)
			for _, ok := range []bool{
				is[driver.ExecerContext](conn), is[driver.QueryerContext](conn), is[driver.ConnBeginTx](conn),
				is[driver.SessionResetter](conn), is[driver.Pinger](conn), is[driver.ConnPrepareContext](conn),
			} {
				assert.False(t, ok, "a legacy connection has none of the context interfaces")
			}
			st, err := conn.Prepare("P")
			require.NoError(t, err)
			require.NoError(t, st.Close())
			assert.Equal(t, []string{"prepare P", "close P"}, c.Calls())
		})
	}
}

func is[I any](v any) bool {
	_, ok := v.(I)
	return ok
}
