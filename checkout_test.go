package pgxleak_test

import (
	"context"
	"database/sql"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/stack"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

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

// leakRowsKept is leakRows whose caller keeps the Rows reachable, then
// drops it without Close.
//
//go:noinline
func leakRowsKept(t *testing.T, db *sql.DB) (line site, rows *sql.Rows) {
	line = lineBelow()
	rows, err := db.Query("SELECT generate_series(1, 3)")
	require.NoError(t, err)
	return line, rows
}

//go:noinline
func leakQueryRow(db *sql.DB) (line site) {
	line = lineBelow()
	_ = db.QueryRow("SELECT 1") // never scanned
	return line
}

func TestWithoutStatements(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithoutStatements())
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	defer c.Close()
	_, err = c.ExecContext(context.Background(), "SELECT 'hidden'")
	require.NoError(t, err)
	cs := checkouts(t, db)
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
				cs := checkouts(t, db)
				require.Len(t, cs, 1, "not tracked")
				if cs[0].Culprit.Line != 0 {
					got++
				}
				c.Close()
			}
			assert.Equal(t, tc.withCulprits, got, "checkouts with a culprit")
			st := stats(t, db)
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
	cs := checkouts(t, db)
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
		"no holdAt frame:\n%s", stackString(fp))
}

func TestCheckoutStackFramePointersMatchCallers(t *testing.T) {
	leaktest.CheckFramePointerStacks(t, holdPaths)
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
			// Half an allocation of slack absorbs a background
			// goroutine's odd allocation during a round; one more
			// allocation per operation still fails.
			assert.Less(t, extraAllocs(t, tc.op), tc.extra+0.5, "allocations per operation beyond plain database/sql's")
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
	// Allocations are counted over every goroutine, and the pools'
	// background goroutines (and the race detector's) only ever add to
	// them: the least of five rounds of each is the operation's own. The
	// count stays fractional (testing.AllocsPerRun truncates), so that a
	// little noise near a whole number cannot read as one more allocation.
	n := [2]float64{math.Inf(1), math.Inf(1)}
	for range 5 {
		for i, db := range []*sql.DB{plain, tracked} {
			n[i] = min(n[i], allocsPerOp(t, db, op))
		}
	}
	t.Logf("allocations per operation: plain %.2f, pgxleak %.2f", n[0], n[1])
	return n[1] - n[0]
}

// allocsPerOp is testing.AllocsPerRun without the truncation: op runs
// once to warm up, then 200 times.
//
// A statement on a cancellable context starts database/sql's awaitDone
// goroutine, which ends only once it is scheduled. On a busy machine the
// next statement would start its own before the last one's is free to
// reuse, and the runtime would allocate a new goroutine, up to one more
// allocation per statement on either pool. So each run waits, on one P,
// until the goroutines it started have ended.
func allocsPerOp(t *testing.T, db *sql.DB, op func(db *sql.DB) error) float64 {
	const runs = 200
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	require.NoError(t, op(db))
	settle := func(want int) {
		for i := 0; runtime.NumGoroutine() > want && i < 1000; i++ {
			runtime.Gosched()
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		n := runtime.NumGoroutine()
		require.NoError(t, op(db))
		settle(n)
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / runs
}
