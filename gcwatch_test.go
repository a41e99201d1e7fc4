package pgxleak_test

import (
	"context"
	"database/sql"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// pgxleak watches Rows read on a context that cannot be cancelled for
// garbage collection with one reusable watch per connection (no cleanup
// registered per query). These tests pin what the reuse must preserve.

// TestGCWatchReuseNoFalseReports: many Rows closed normally, with
// collections in between, report nothing; one dropped Rows is reported
// once.
func TestGCWatchReuseNoFalseReports(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, err := pgxleak.OpenDB(&testdriver.Connector{}, pgxleak.WithMaxOpenConns(2), pgxleak.WithLogger(quiet), rec.Option())
	require.NoError(t, err)
	defer db.Close()
	for i := range 200 {
		rows, err := db.Query("SELECT n FROM t")
		require.NoError(t, err)
		for rows.Next() {
		}
		require.NoError(t, rows.Close())
		if i%20 == 0 {
			runtime.GC()
		}
	}
	// Two Rows open at once on one connection: the second gets a watch
	// of its own, and the spare one is dropped when both are closed.
	conn, err := db.Conn(context.Background())
	require.NoError(t, err)
	r1, err := conn.QueryContext(context.Background(), "SELECT 1")
	require.NoError(t, err)
	r2, err := conn.QueryContext(context.Background(), "SELECT 2")
	require.NoError(t, err)
	require.NoError(t, r1.Close())
	require.NoError(t, r2.Close())
	require.NoError(t, conn.Close())
	for range 5 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	require.Zero(t, stats(t, db).GarbageCollected, "garbage-collection reports for Rows that were closed: %v", rec.All())

	gcwatchDropRows(t, db)
	pgtest.WaitFor(t, 10*time.Second, "the dropped Rows to be reported", func() bool {
		runtime.GC()
		return stats(t, db).GarbageCollected != 0
	})
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	assert.EqualValues(t, 1, stats(t, db).GarbageCollected, "reports for one dropped Rows")
}

// gcwatchDropRows runs a query and drops its Rows without closing them.
//
//go:noinline
func gcwatchDropRows(t *testing.T, db *sql.DB) {
	rows, err := db.Query("SELECT 1")
	require.NoError(t, err)
	_ = rows
}

// TestGCWatchConnectionsCollected: a connection keeps its watch between
// queries, and the watch's cleanup refers back to the connection; closing
// the connection must break that cycle, or every connection that ever ran
// a query would stay in memory. With no idle connections kept, each query
// opens and closes one; all of them must be collectable.
func TestGCWatchConnectionsCollected(t *testing.T) {
	mc := &testdriver.Connector{TrackGC: true}
	db, err := pgxleak.OpenDB(mc, pgxleak.WithMaxOpenConns(2), pgxleak.WithLogger(quiet))
	require.NoError(t, err)
	defer db.Close()
	db.SetMaxIdleConns(0)
	const n = 50
	for range n {
		var v int64
		require.NoError(t, db.QueryRow("SELECT n FROM t").Scan(&v))
	}
	require.EqualValues(t, n, mc.Closed.Load(), "connections closed")
	pgtest.WaitFor(t, 10*time.Second, "every closed connection to be garbage-collected", func() bool {
		runtime.GC()
		return mc.Collected.Load() >= n
	})
}

// TestGCWatchAllocations: a query on a context that can never be cancelled
// is watched for garbage collection with the connection's one watch, so
// it allocates one object more than plain database/sql: the Rows wrapper.
func TestGCWatchAllocations(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   func(db *sql.DB) error
	}{
		{"QueryRow", func(db *sql.DB) error {
			var n int64
			return db.QueryRow("SELECT n FROM t").Scan(&n)
		}},
		{"Query, Next, Close", func(db *sql.DB) error {
			rows, err := db.QueryContext(context.Background(), "SELECT n FROM t")
			if err != nil {
				return err
			}
			for rows.Next() {
			}
			return rows.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.LessOrEqual(t, extraAllocs(t, tc.op), 1.0, "allocations per query beyond plain database/sql's: at most the Rows wrapper")
		})
	}
}
