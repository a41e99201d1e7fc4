package pgxleak_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/stack"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

func TestLeakConnNeverClosed(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.Option())
	line := lineBelow()
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	l := rec.Wait(t, 5*time.Second, suspectedAt(line))
	require.GreaterOrEqual(t, l.Held, threshold, "reported before the threshold")
	require.True(t, strings.HasPrefix(l.Checkout.String(), fmt.Sprintf("connection checked out at %s (pgxleak_test.TestLeakConnNeverClosed)", line.short())),
		"report: %s", l.Checkout)
	require.NotZero(t, l.BackendPID, "the report's backend: %+v", l)
	require.NotEmpty(t, l.Pool, "the report's pool: %+v", l)
	require.Equal(t, "idle", l.TxStatus, "the report's transaction status")
	require.NotEmpty(t, l.Stack, "the report's stack")
	require.ErrorContains(t, pgxleak.Find(db, pgxleak.GracePeriod(0)), line.String(), "Find names the culprit line")
	c.Close()
	r := rec.Wait(t, 5*time.Second, resolvedAt(line))
	require.GreaterOrEqual(t, r.Held, l.Held, "resolved after less time than it was already held")
	pgxleak.VerifyNone(t, db)
	st := pgxleak.Stats(db)
	assert.EqualValues(t, 1, st.Suspected, "suspected leaks")
	assert.EqualValues(t, 1, st.Resolved, "resolved leaks")
}

func TestLeakTxNeverEnded(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.Option())
	line := lineBelow()
	tx, err := db.Begin()
	require.NoError(t, err)
	_, err = tx.Exec("CREATE TABLE t (id int)")
	require.NoError(t, err)
	l := rec.Wait(t, 5*time.Second, suspectedAt(line))
	require.Equal(t, "in transaction", l.TxStatus)
	require.Equal(t, "CREATE TABLE t (id int)", l.LastStatement)
	require.NoError(t, tx.Rollback())
	rec.Wait(t, 5*time.Second, resolvedAt(line))
	pgxleak.VerifyNone(t, db)
}

// leakRows runs a query on a context that can never be cancelled and drops
// the *sql.Rows without closing it: that connection never comes back.
//
//go:noinline
func leakRows(t *testing.T, db *sql.DB) (line site) {
	line = lineBelow()
	rows, err := db.Query("SELECT generate_series(1, 3)")
	require.NoError(t, err)
	_ = rows
	return line
}

func TestLeakRowsNeverClosedThresholdAndGC(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.Option())
	line := leakRows(t, db)
	rec.Wait(t, 5*time.Second, suspectedAt(line))
	pgtest.WaitFor(t, 10*time.Second, "a garbage-collection report", func() bool {
		runtime.GC()
		return rec.Has(func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakGarbageCollected && isCulprit(line)(l) })
	})
	st := pgxleak.Stats(db)
	assert.EqualValues(t, 1, st.GarbageCollected, "the connection is counted once")
	assert.EqualValues(t, 1, st.CheckedOut, "the connection is lost for good")
	assert.Equal(t, 1, st.DBStats.InUse, "the connection is lost for good")
}

//go:noinline
func leakQueryRow(db *sql.DB) (line site) {
	line = lineBelow()
	_ = db.QueryRow("SELECT 1") // never scanned
	return line
}

func TestLeakQueryRowNeverScanned(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.Option())
	line := leakQueryRow(db)
	rec.Wait(t, 5*time.Second, suspectedAt(line))
	assert.Len(t, pgxleak.Checkouts(db), 1, "the unscanned row's connection")
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

// TestNoFalsePositives: many goroutines running short queries on a small
// pool never look like leaks, and every checkout is matched by a return.
// PGXLEAK_FULL=1 runs the full 2 million queries.
func TestNoFalsePositives(t *testing.T) {
	const goroutines = 200
	perG := 100 // 20,000 queries
	if os.Getenv("PGXLEAK_FULL") == "1" {
		perG = 10_000 // 2,000,000 queries
	}
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(5), pgxleak.WithLeakThreshold(time.Second), rec.Option())
	var failed atomic.Int64
	var longest atomic.Int64 // the longest query, in ns: no checkout of it was held longer
	start := time.Now()
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range perG {
				var n int
				began := time.Now()
				if err := db.QueryRow("SELECT 1").Scan(&n); err != nil {
					failed.Add(1)
				}
				for d, m := int64(time.Since(began)), longest.Load(); d > m && !longest.CompareAndSwap(m, d); m = longest.Load() {
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	total := goroutines * perG
	require.Zero(t, failed.Load(), "queries failed of %d", total)
	// On a loaded machine a query can really hold its connection past the
	// 1s threshold (a goroutine starved of CPU): that report is true. A
	// false one claims a hold no query had.
	for _, l := range rec.All() {
		held := l.Held
		if !l.SeenAt.IsZero() {
			held -= l.SeenAt.Sub(l.CheckedOutAt) // the bound of a checkout seen late
		}
		require.True(t, l.Kind == pgxleak.LeakSuspected && held <= time.Duration(longest.Load()),
			"false report (longest query %v): %v", time.Duration(longest.Load()), l)
	}
	st := pgxleak.Stats(db)
	assert.Equal(t, st.Checkouts, st.Returns, "unbalanced after %d queries", total)
	assert.Zero(t, st.CheckedOut, "unbalanced after %d queries", total)
	assert.GreaterOrEqual(t, st.Checkouts, uint64(total), "a checkout per query at least")
	t.Logf("%d queries in %v (%.0f/s); %d checkouts, %d returns, %d waits",
		total, elapsed, float64(total)/elapsed.Seconds(), st.Checkouts, st.Returns, st.WaitCount)
}

func TestWithoutStatements(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithoutStatements())
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	defer c.Close()
	_, err = c.ExecContext(context.Background(), "SELECT 'hidden'")
	require.NoError(t, err)
	cs := pgxleak.Checkouts(db)
	require.Len(t, cs, 1)
	assert.Empty(t, cs[0].LastStatement, "the statement is not recorded")
}

// TestStackCaptureOffAndSampled: with capture off or sampled, checkouts are
// still tracked and counted; only the culprit is missing.
func TestStackCaptureOffAndSampled(t *testing.T) {
	for _, tc := range []struct {
		name         string
		opt          pgxleak.Option
		withCulprits int // of 4 sequential checkouts of one connection
	}{
		{"off", pgxleak.WithStackDepth(0), 0},
		{"sampled 1 in 2", pgxleak.WithStackSampling(2), 2},
		{"full", pgxleak.WithStackDepth(64), 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, _ := openTest(t, tc.opt, pgxleak.WithMaxOpenConns(1))
			got := 0
			for range 4 {
				c, err := db.Conn(context.Background())
				require.NoError(t, err)
				cs := pgxleak.Checkouts(db)
				require.Len(t, cs, 1, "not tracked")
				if cs[0].Culprit.Line != 0 {
					got++
				}
				c.Close()
			}
			assert.Equal(t, tc.withCulprits, got, "checkouts with a culprit")
			st := pgxleak.Stats(db)
			assert.EqualValues(t, 4, st.Checkouts, "checkouts tracked")
			assert.EqualValues(t, 4, st.Returns, "returns tracked")
		})
	}
}

// TestLastStatementBelongsToTheCheckout: a new checkout does not inherit
// the previous holder's statement.
func TestLastStatementBelongsToTheCheckout(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(1))
	_, err := db.Exec("SELECT 'previous request'")
	require.NoError(t, err)
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	defer c.Close()
	cs := pgxleak.Checkouts(db)
	require.Len(t, cs, 1)
	assert.Empty(t, cs[0].LastStatement, "no statement yet")
}

// The checkout stacks pgxleak reports are captured by unwinding frame
// pointers (internal/stack). These tests take the same checkout twice on
// each real call path, once with frame pointers and once with
// runtime.Callers, and require the reported stacks to be identical, frame
// for frame: through database/sql's paths (Conn, Tx, Rows, prepared
// statements, QueryRow), over the in-memory driver and over pgx against
// the real server. The sqlx and GORM paths are in the integration module,
// through the same harness (internal/leaktest).

func TestCheckoutStackFramePointersMatchCallers(t *testing.T) {
	leaktest.CheckFramePointerStacks(t, holdPaths)
}

var holdPaths = []leaktest.HoldPath{
	{Name: "db.Conn", Want: "database/sql.(*DB).Conn", Hold: func(t *testing.T, db *sql.DB) func() {
		c, err := db.Conn(context.Background())
		require.NoError(t, err)
		return func() { _ = c.Close() }
	}},
	{Name: "db.BeginTx", Want: "database/sql.(*DB).BeginTx", Hold: func(t *testing.T, db *sql.DB) func() {
		tx, err := db.BeginTx(context.Background(), nil)
		require.NoError(t, err)
		return func() { _ = tx.Rollback() }
	}},
	{Name: "db.Query", Want: "database/sql.(*DB).Query", Hold: func(t *testing.T, db *sql.DB) func() {
		rows, err := db.Query("SELECT 1")
		require.NoError(t, err)
		return func() { _ = rows.Close() }
	}},
	{Name: "db.QueryContext cancellable", Want: "database/sql.(*DB).QueryContext", Hold: func(t *testing.T, db *sql.DB) func() {
		ctx, cancel := context.WithCancel(context.Background())
		rows, err := db.QueryContext(ctx, "SELECT 1")
		require.NoError(t, err)
		return func() { _ = rows.Close(); cancel() }
	}},
	{Name: "stmt.Query", Want: "database/sql.(*Stmt).Query", Hold: func(t *testing.T, db *sql.DB) func() {
		st, err := db.Prepare("SELECT 1")
		require.NoError(t, err)
		rows, err := st.Query()
		require.NoError(t, err)
		return func() { _ = rows.Close(); _ = st.Close() }
	}},
}

// TestCheckoutStackDeeperThanBuffer: with a stack deeper than the 32
// recorded frames, runtime.Callers records 32 logical frames, and
// frame-pointer unwinding 32 physical ones, which expand to at least as
// many; the innermost frames are the same.
func TestCheckoutStackDeeperThanBuffer(t *testing.T) {
	if !stack.FramePointers() {
		t.Skip("frame-pointer unwinding is off")
	}
	path := leaktest.HoldPath{Name: "deep db.Conn", Want: "database/sql.(*DB).Conn", Hold: func(t *testing.T, db *sql.DB) func() {
		c, err := holdAt(db, 40)
		require.NoError(t, err)
		return func() { _ = c.Close() }
	}}
	var got [2][]pgxleak.Frame
	for i, fp := range []bool{true, false} {
		got[i] = leaktest.HeldStack(t, &testdriver.Connector{}, path, fp)
	}
	fp, rc := got[0], got[1]
	require.GreaterOrEqual(t, len(fp), len(rc), "frame pointers must give at least as many frames")
	require.Equal(t, rc, fp[:len(rc)], "the innermost frames must be the same")
	assert.True(t, slices.ContainsFunc(fp, func(f pgxleak.Frame) bool { return strings.Contains(f.Function, "holdAt") }),
		"no holdAt frame:\n%s", pgxleak.Checkout{Stack: fp}.StackString())
}

// TestCheckoutAllocations: tracking a checkout and its return allocates
// nothing beyond what database/sql allocates itself, and neither does a
// statement on a context that can be cancelled (not watched for garbage
// collection) beyond its Rows wrapper. The counts are compared with a
// plain pool over the same driver, in the same run.
func TestCheckoutAllocations(t *testing.T) {
	deadline, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	for _, tc := range []struct {
		name  string
		op    func(db *sql.DB) error
		extra float64
	}{
		{"conn and close", func(db *sql.DB) error {
			c, err := db.Conn(context.Background())
			if err != nil {
				return err
			}
			return c.Close()
		}, 0},
		{"exec", func(db *sql.DB) error {
			_, err := db.ExecContext(context.Background(), "UPDATE t SET n = 1")
			return err
		}, 0},
		{"query with a deadline", func(db *sql.DB) error {
			var n int64
			return db.QueryRowContext(deadline, "SELECT n FROM t").Scan(&n)
		}, 1},
		{"begin and commit", func(db *sql.DB) error {
			tx, err := db.BeginTx(context.Background(), nil)
			if err != nil {
				return err
			}
			return tx.Commit()
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.LessOrEqual(t, extraAllocs(t, tc.op), tc.extra, "allocations per operation beyond plain database/sql's")
		})
	}
}

// extraAllocs returns how many more allocations op makes on a pgxleak pool
// than on a plain one, both of 10 connections over the in-memory driver,
// with pgxleak's defaults (the stack of every checkout, GC detection).
func extraAllocs(t *testing.T, op func(db *sql.DB) error) float64 {
	t.Helper()
	plain := sql.OpenDB(&testdriver.Connector{})
	defer plain.Close()
	plain.SetMaxIdleConns(10)
	tracked, err := pgxleak.OpenDB(&testdriver.Connector{}, pgxleak.WithLogger(quiet), pgxleak.WithMaxOpenConns(10))
	require.NoError(t, err)
	defer tracked.Close()
	var n [2]float64
	for i, db := range []*sql.DB{plain, tracked} {
		n[i] = testing.AllocsPerRun(200, func() {
			require.NoError(t, op(db))
		})
	}
	t.Logf("allocations per operation: plain %v, pgxleak %v", n[0], n[1])
	return n[1] - n[0]
}
