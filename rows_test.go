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

func TestLeakRowsNeverClosedThresholdAndGC(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.Option())
	// The Rows is kept reachable until the threshold report: another
	// test's runtime.GC could otherwise collect it first, and a collected
	// checkout is never reported as suspected.
	line, rows := leakRowsKept(t, db)
	rec.Wait(t, 5*time.Second, suspectedAt(line))
	runtime.KeepAlive(rows) // from here on, nothing references it
	pgtest.WaitFor(t, 10*time.Second, "a garbage-collection report", func() bool {
		runtime.GC()
		return rec.Has(func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakGarbageCollected && isCulprit(line)(l) })
	})
	st := stats(t, db)
	assert.EqualValues(t, 1, st.GarbageCollected, "the connection is counted once")
	assert.EqualValues(t, 1, st.CheckedOut, "the connection is lost for good")
	assert.Equal(t, 1, st.DBStats.InUse, "the connection is lost for good")
}

func TestLeakQueryRowNeverScanned(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.Option())
	line := leakQueryRow(db)
	rec.Wait(t, 5*time.Second, suspectedAt(line))
	assert.Len(t, checkouts(t, db), 1, "the unscanned row's connection")
}

// TestLeakRowsCancellableResolved: rows on a cancellable context are
// reported as suspected, then as resolved when database/sql closes them
// because the context ended.
func TestLeakRowsCancellableResolved(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.Option())
	ctx, cancel := context.WithCancel(context.Background())
	line := lineBelow()
	rows, err := db.QueryContext(ctx, "SELECT generate_series(1, 3)")
	require.NoError(t, err)
	defer rows.Close()
	rec.Wait(t, 5*time.Second, suspectedAt(line))
	cancel()
	r := rec.Wait(t, 5*time.Second, resolvedAt(line))
	require.GreaterOrEqual(t, r.Held, threshold, "held")
	pgxleak.VerifyNone(t, db)
}

// scanPath is a way database/sql reads a driver's rows: Next into
// driver.Values, or, from Go 1.27 on, NextRow and ScanColumn when the
// driver's Rows is a driver.RowsColumnScanner, as pgx's is.
type scanPath struct {
	name    string
	scanner bool // the fake driver's Rows is a driver.RowsColumnScanner
}

// scanPaths are the scan paths of the running Go release.
func scanPaths() []scanPath {
	paths := []scanPath{{"Next", false}}
	if testdriver.RowsColumnScanner() {
		paths = append(paths, scanPath{"NextRow and ScanColumn", true})
	}
	return paths
}

const rowsQuery = "SELECT n FROM t"

// TestRowsBookkeepingOnEveryScanPath: whichever way database/sql reads
// the rows, the wrapper's bookkeeping is the same: the connection is out
// with the query as its last statement while the Rows is open, comes back
// when database/sql ends the Rows at io.EOF or at Close (the wrapped Rows
// closed once), and a Rows dropped without Close is reported when it is
// garbage-collected.
func TestRowsBookkeepingOnEveryScanPath(t *testing.T) {
	scenarios := []struct {
		name string
		run  func(t *testing.T, db *sql.DB)
	}{
		{"read to io.EOF", func(t *testing.T, db *sql.DB) {
			rows, err := db.Query(rowsQuery)
			require.NoError(t, err)
			var got []int64
			for rows.Next() {
				var n int64
				require.NoError(t, rows.Scan(&n))
				got = append(got, n)
			}
			require.NoError(t, rows.Err())
			assert.Equal(t, []int64{1}, got)
		}},
		{"closed before io.EOF", func(t *testing.T, db *sql.DB) {
			rows, err := db.Query(rowsQuery)
			require.NoError(t, err)
			require.True(t, rows.Next())
			var n int64
			require.NoError(t, rows.Scan(&n))
			cs := checkouts(t, db)
			require.Len(t, cs, 1, "the open Rows holds the connection")
			assert.Equal(t, rowsQuery, cs[0].LastStatement)
			require.NoError(t, rows.Close())
		}},
		{"QueryRow", func(t *testing.T, db *sql.DB) {
			var n int64
			require.NoError(t, db.QueryRow(rowsQuery).Scan(&n))
			assert.Equal(t, int64(1), n)
		}},
	}
	for _, path := range scanPaths() {
		t.Run(path.name, func(t *testing.T) {
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					fc := &testdriver.Connector{Scanner: path.scanner}
					db, err := pgxleak.OpenDB(fc, pgxleak.WithMaxOpenConns(1), pgxleak.WithLogger(quiet))
					require.NoError(t, err)
					defer db.Close()
					sc.run(t, db)
					st := stats(t, db)
					assert.Empty(t, checkouts(t, db))
					assert.Equal(t, 0, st.InUse)
					assert.Equal(t, uint64(1), st.Checkouts)
					assert.Equal(t, uint64(1), st.Returns)
					assert.Equal(t, int64(1), fc.RowsClosed.Load(), "the wrapped Rows is closed once")
				})
			}
			t.Run("dropped without Close", func(t *testing.T) {
				rec := &leaktest.Recorder{}
				fc := &testdriver.Connector{Scanner: path.scanner}
				db, err := pgxleak.OpenDB(fc, pgxleak.WithLogger(quiet), rec.Option())
				require.NoError(t, err)
				defer db.Close()
				leakOnPurpose(func() {
					rows, err := db.QueryContext(context.Background(), rowsQuery)
					require.NoError(t, err)
					require.True(t, rows.Next())
				})
				pgtest.WaitFor(t, 10*time.Second, "the dropped Rows reported", func() bool {
					runtime.GC()
					return stats(t, db).GarbageCollected == 1
				})
				l := rec.Wait(t, 10*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakGarbageCollected })
				assert.Equal(t, rowsQuery, l.LastStatement)
				assert.Equal(t, int64(0), fc.RowsClosed.Load())
			})
		})
	}
}
