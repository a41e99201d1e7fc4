package pgxleak_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// lineBelow returns the line after the caller's: put it right above the call
// that checks a connection out.
func lineBelow() int {
	_, _, line, _ := runtime.Caller(1)
	return line + 1
}

const thisFile = "leakcheck_test.go"

// shortFile is how reports name this file: its directory and name.
func shortFile() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Base(filepath.Dir(file)) + "/" + thisFile
}

func isCulprit(line int) func(pgxleak.Leak) bool {
	return func(l pgxleak.Leak) bool {
		return filepath.Base(l.Culprit.File) == thisFile && l.Culprit.Line == line
	}
}

func suspectedAt(line int) func(pgxleak.Leak) bool {
	return func(l pgxleak.Leak) bool {
		return l.Kind == pgxleak.LeakSuspected && !l.Resolved && isCulprit(line)(l)
	}
}

func resolvedAt(line int) func(pgxleak.Leak) bool {
	return func(l pgxleak.Leak) bool { return l.Resolved && isCulprit(line)(l) }
}

const threshold = 100 * time.Millisecond

func TestLeakConnNeverClosed(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.option())
	line := lineBelow()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	l := rec.wait(t, 5*time.Second, suspectedAt(line))
	if l.Held < threshold || !strings.HasPrefix(l.Checkout.String(), fmt.Sprintf("connection checked out at %s:%d (pgxleak_test.TestLeakConnNeverClosed)", shortFile(), line)) {
		t.Fatalf("report: %s (held %v)", l.Checkout, l.Held)
	}
	if l.BackendPID == 0 || l.Pool == "" || l.TxStatus != "idle" || len(l.Stack) == 0 {
		t.Fatalf("report lacks fields: %+v", l)
	}
	if err := pgxleak.Find(db, pgxleak.GracePeriod(0)); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%s:%d", thisFile, line)) {
		t.Fatalf("Find = %v, want the culprit line", err)
	}
	c.Close()
	r := rec.wait(t, 5*time.Second, resolvedAt(line))
	if r.Held < l.Held {
		t.Fatalf("resolved after %v, but it was already held %v", r.Held, l.Held)
	}
	pgxleak.VerifyNone(t, db)
	if st := pgxleak.Stats(db); st.Suspected != 1 || st.Resolved != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLeakTxNeverEnded(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.option())
	line := lineBelow()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	l := rec.wait(t, 5*time.Second, suspectedAt(line))
	if l.TxStatus != "in transaction" || l.LastStatement != "CREATE TABLE t (id int)" {
		t.Fatalf("tx status %q, last statement %q", l.TxStatus, l.LastStatement)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 5*time.Second, resolvedAt(line))
	pgxleak.VerifyNone(t, db)
}

// leakRows runs a query on a context that can never be cancelled and drops
// the *sql.Rows without closing it: that connection never comes back.
//
//go:noinline
func leakRows(t *testing.T, db *sql.DB) (line int) {
	line = lineBelow()
	rows, err := db.Query("SELECT generate_series(1, 3)")
	if err != nil {
		t.Fatal(err)
	}
	_ = rows
	return line
}

func TestLeakRowsNeverClosedThresholdAndGC(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.option())
	line := leakRows(t, db)
	rec.wait(t, 5*time.Second, suspectedAt(line))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !hasLeak(rec, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakGarbageCollected && isCulprit(line)(l) }) {
		runtime.GC()
		select {
		case <-rec.added:
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("no garbage-collection report; got %v", rec.all())
		}
	}
	st := pgxleak.Stats(db)
	if st.GarbageCollected != 1 || st.CheckedOut != 1 || st.DBStats.InUse != 1 {
		t.Fatalf("stats %+v: the connection is lost for good, and counted once", st)
	}
}

func hasLeak(r *leakRecorder, match func(pgxleak.Leak) bool) bool {
	for _, l := range r.all() {
		if match(l) {
			return true
		}
	}
	return false
}

//go:noinline
func leakQueryRow(db *sql.DB) (line int) {
	line = lineBelow()
	_ = db.QueryRow("SELECT 1") // never scanned
	return line
}

func TestLeakQueryRowNeverScanned(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.option())
	line := leakQueryRow(db)
	rec.wait(t, 5*time.Second, suspectedAt(line))
	if n := len(pgxleak.Checkouts(db)); n != 1 {
		t.Fatalf("%d checkouts, want the unscanned row's connection", n)
	}
}

// TestLeakRowsCancellableResolved: rows on a cancellable context are
// reported as suspected, then as resolved when database/sql closes them
// because the context ended.
func TestLeakRowsCancellableResolved(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.option())
	ctx, cancel := context.WithCancel(context.Background())
	line := lineBelow()
	rows, err := db.QueryContext(ctx, "SELECT generate_series(1, 3)")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	rec.wait(t, 5*time.Second, suspectedAt(line))
	cancel()
	r := rec.wait(t, 5*time.Second, resolvedAt(line))
	if r.Held < threshold {
		t.Fatalf("held %v", r.Held)
	}
	pgxleak.VerifyNone(t, db)
}

// TestLeakOpenerHandoffAttributedToWaiter: with a pool of one, a goroutine
// waits while the only connection is out; that connection comes back bad,
// so database/sql's background opener connects a new one and hands it to
// the waiter, with no driver call on the waiter's goroutine until its query.
// The checkout must still be attributed to the waiter's line.
func TestLeakOpenerHandoffAttributedToWaiter(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(1), pgxleak.WithLeakThreshold(threshold), rec.option())
	ctx := context.Background()
	holder, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var firstPID int
	if err := holder.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&firstPID); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.ExecContext(ctx, "BEGIN"); err != nil { // makes it invalid on return
		t.Fatal(err)
	}
	waiterLine := make(chan int, 1)
	done := make(chan struct{})
	var rows *sql.Rows
	go func() {
		defer close(done)
		line := lineBelow()
		waiterLine <- line
		r, err := db.Query("SELECT pg_backend_pid()")
		if err != nil {
			t.Error(err)
			return
		}
		rows = r
	}()
	line := <-waiterLine
	line++
	pgtest.WaitFor(t, 5*time.Second, "the waiter to queue", func() bool { return db.Stats().WaitCount == 1 })
	holder.Close() // bad: closed, and the opener connects a new one for the waiter
	<-done
	if rows == nil {
		t.FailNow()
	}
	defer rows.Close()
	l := rec.wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakSuspected && l.Culprit.Line == line })
	if filepath.Base(l.Culprit.File) != thisFile || int(l.BackendPID) == firstPID {
		t.Fatalf("culprit %s, pid %d (first %d)", l.Culprit, l.BackendPID, firstPID)
	}
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
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(5), pgxleak.WithLeakThreshold(time.Second), rec.option())
	var failed atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range perG {
				var n int
				if err := db.QueryRow("SELECT 1").Scan(&n); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	total := goroutines * perG
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d queries failed", f, total)
	}
	if got := rec.all(); len(got) != 0 {
		t.Fatalf("%d false reports, first: %v", len(got), got[0])
	}
	st := pgxleak.Stats(db)
	if st.Checkouts != st.Returns || st.CheckedOut != 0 || st.Checkouts < uint64(total) {
		t.Fatalf("unbalanced after %d queries: %+v", total, st)
	}
	t.Logf("%d queries in %v (%.0f/s); %d checkouts, %d returns, %d waits",
		total, elapsed, float64(total)/elapsed.Seconds(), st.Checkouts, st.Returns, st.WaitCount)
}

func TestDrainWaitsForReturns(t *testing.T) {
	db, _ := openTest(t)
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan error, 1)
	go func() { drained <- pgxleak.Drain(context.Background(), db) }()
	pgtest.WaitFor(t, 5*time.Second, "drain to start refusing checkouts", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := db.ExecContext(ctx, "SELECT 1")
		return errors.Is(err, pgxleak.ErrDraining)
	})
	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v while a connection was out", err)
	default:
	}
	if _, err := c.ExecContext(context.Background(), "SELECT 1"); err != nil {
		t.Fatalf("a connection already out must keep working during drain: %v", err)
	}
	c.Close()
	if err := <-drained; err != nil {
		t.Fatalf("Drain = %v", err)
	}
	if err := db.Ping(); err == nil {
		t.Fatal("the pool is still open after Drain")
	}
}

func TestDrainReportsLeftovers(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, rec.option())
	line := lineBelow()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = pgxleak.Drain(ctx, db)
	var le *pgxleak.LeakError
	if !errors.As(err, &le) || len(le.Checkouts) != 1 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain = %v, want a LeakError with one checkout and the deadline", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("%s:%d", thisFile, line)) {
		t.Fatalf("Drain error does not name the culprit line %d: %v", line, err)
	}
	rec.wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut && isCulprit(line)(l) })
	if st := pgxleak.Stats(db); st.StillOut != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCloseReportsStillOut(t *testing.T) {
	rec := newLeakRecorder()
	dsn := pgtest.NewDatabase(t)
	db, err := pgxleak.Open("pgx", dsn, rec.option(), pgxleak.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	line := lineBelow()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	rec.wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut && isCulprit(line)(l) })
	c.Close()
}

// fakeT records what VerifyNone reports.
type fakeT struct {
	mu     sync.Mutex
	errors []string
}

func (f *fakeT) Error(args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errors = append(f.errors, fmt.Sprint(args...))
}

func TestVerifyNone(t *testing.T) {
	db, _ := openTest(t)
	line := lineBelow()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeT{}
	pgxleak.VerifyNone(ft, db, pgxleak.GracePeriod(50*time.Millisecond))
	if len(ft.errors) != 1 || !strings.Contains(ft.errors[0], fmt.Sprintf("%s:%d", thisFile, line)) ||
		!strings.Contains(ft.errors[0], "1 connection(s) still checked out") || !strings.Contains(ft.errors[0], "TestVerifyNone") {
		t.Fatalf("VerifyNone reported %q", ft.errors)
	}
	ignoring := &fakeT{}
	pgxleak.VerifyNone(ignoring, db, pgxleak.GracePeriod(0), pgxleak.IgnoreFunction("github.com/pgxleak/pgxleak_test.TestVerifyNone"))
	if len(ignoring.errors) != 0 {
		t.Fatalf("IgnoreFunction did not ignore: %q", ignoring.errors)
	}
	// A connection on its way back within the grace period is not a leak.
	go func() {
		time.Sleep(50 * time.Millisecond) // the holder finishes a little later
		c.Close()
	}()
	clean := &fakeT{}
	pgxleak.VerifyNone(clean, db, pgxleak.GracePeriod(5*time.Second))
	if len(clean.errors) != 0 {
		t.Fatalf("VerifyNone after return: %q", clean.errors)
	}
	notTracked := &fakeT{}
	plain, _ := sql.Open("pgx", "postgres://x@127.0.0.1/x")
	defer plain.Close()
	pgxleak.VerifyNone(notTracked, plain)
	if len(notTracked.errors) != 1 || !strings.Contains(notTracked.errors[0], "not opened by pgxleak") {
		t.Fatalf("VerifyNone on a plain *sql.DB: %q", notTracked.errors)
	}
}

// TestVerifyNoneAfterTestContext: rows on t.Context() are closed by
// database/sql asynchronously once the test ends; VerifyNone in Cleanup
// waits for that instead of failing.
func TestVerifyNoneAfterTestContext(t *testing.T) {
	db, _ := openTest(t)
	ft := &fakeT{}
	t.Run("leaves rows open on t.Context()", func(t *testing.T) {
		t.Cleanup(func() { pgxleak.VerifyNone(ft, db) })
		rows, err := db.QueryContext(t.Context(), "SELECT generate_series(1, 10)")
		if err != nil {
			t.Fatal(err)
		}
		_ = rows
	})
	if len(ft.errors) != 0 {
		t.Fatalf("VerifyNone: %q", ft.errors)
	}
}

// TestReportsDeduplicated: a leak in a loop is reported once per culprit
// and counted, not logged a hundred times.
func TestReportsDeduplicated(t *testing.T) {
	rec := newLeakRecorder()
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(10), pgxleak.WithLeakThreshold(threshold), rec.option(), pgxleak.WithLogger(logger))
	var conns []*sql.Conn
	line := 0
	for range 10 {
		line = lineBelow()
		c, err := db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	pgtest.WaitFor(t, 5*time.Second, "all ten to be suspected", func() bool { return pgxleak.Stats(db).Suspected == 10 })
	for _, c := range conns {
		c.Close()
	}
	pgtest.WaitFor(t, 5*time.Second, "all ten to resolve", func() bool { return pgxleak.Stats(db).Resolved == 10 })
	rec.wait(t, 5*time.Second, resolvedAt(line))
	var suspected, resolved int
	for _, l := range rec.all() {
		if !isCulprit(line)(l) {
			t.Fatalf("culprit %s, want line %d", l.Culprit, line)
		}
		if l.Resolved {
			resolved++
		} else {
			suspected++
		}
	}
	if suspected != 1 || resolved != 1 {
		t.Fatalf("%d suspected and %d resolved reports delivered, want 1 each", suspected, resolved)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(buf.String(), `msg="pgxleak: suspected leak:`); n != 1 {
		t.Fatalf("%d log lines for one culprit:\n%s", n, buf.String())
	}
}

func TestCheckoutsFields(t *testing.T) {
	db, _ := openTest(t)
	ctx := context.Background()
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var pid int
	if err := c.QueryRowContext(ctx, "SELECT pg_backend_pid() WHERE $1::text <> ''", "argument-value").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	cs := pgxleak.Checkouts(db)
	if len(cs) != 1 {
		t.Fatalf("Checkouts = %v", cs)
	}
	co := cs[0]
	if int(co.BackendPID) != pid || co.TxStatus != "idle" || co.Suspected || co.Held <= 0 || time.Since(co.CheckedOutAt) < co.Held-time.Millisecond {
		t.Fatalf("checkout %+v (pid %d)", co, pid)
	}
	if co.LastStatement != "SELECT pg_backend_pid() WHERE $1::text <> ''" || strings.Contains(co.String(), "argument-value") {
		t.Fatalf("statement %q: want the text without arguments", co.LastStatement)
	}
	if pgxleak.Checkouts(nil) != nil {
		t.Fatal("Checkouts(nil) should be nil")
	}
}

func TestWithoutStatements(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithoutStatements())
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ExecContext(context.Background(), "SELECT 'hidden'"); err != nil {
		t.Fatal(err)
	}
	if cs := pgxleak.Checkouts(db); len(cs) != 1 || cs[0].LastStatement != "" {
		t.Fatalf("Checkouts = %+v", cs)
	}
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
				if err != nil {
					t.Fatal(err)
				}
				if cs := pgxleak.Checkouts(db); len(cs) != 1 {
					t.Fatalf("not tracked: %v", cs)
				} else if cs[0].Culprit.Line != 0 {
					got++
				}
				c.Close()
			}
			if got != tc.withCulprits {
				t.Fatalf("%d checkouts with a culprit, want %d", got, tc.withCulprits)
			}
			if st := pgxleak.Stats(db); st.Checkouts != 4 || st.Returns != 4 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestLogReportLeadsWithCulprit(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), pgxleak.WithLogger(logger), rec.option())
	line := lineBelow()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rec.wait(t, 5*time.Second, suspectedAt(line))
	mu.Lock()
	defer mu.Unlock()
	want := fmt.Sprintf(`level=WARN msg="pgxleak: suspected leak: connection checked out at %s:%d (pgxleak_test.TestLogReportLeadsWithCulprit), held `, shortFile(), line)
	if !strings.Contains(buf.String(), want) || !strings.Contains(buf.String(), "kind=suspected") || !strings.Contains(buf.String(), "stack=") {
		t.Fatalf("log:\n%s\nwant it to contain:\n%s", buf.String(), want)
	}
}

// TestLastStatementBelongsToTheCheckout: a new checkout does not inherit
// the previous holder's statement.
func TestLastStatementBelongsToTheCheckout(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(1))
	if _, err := db.Exec("SELECT 'previous request'"); err != nil {
		t.Fatal(err)
	}
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cs := pgxleak.Checkouts(db); len(cs) != 1 || cs[0].LastStatement != "" {
		t.Fatalf("Checkouts = %+v, want no statement yet", cs)
	}
}

// TestDrainDoesNotWaitForGarbageCollectedLeaks: a connection whose Rows
// was garbage-collected never comes back, so Drain reports it at once
// instead of waiting for ctx.
func TestDrainDoesNotWaitForGarbageCollectedLeaks(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, rec.option())
	line := leakRows(t, db)
	deadline := time.Now().Add(10 * time.Second)
	for pgxleak.Stats(db).GarbageCollected == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no garbage-collection report")
		}
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := pgxleak.Drain(ctx, db)
	var le *pgxleak.LeakError
	if !errors.As(err, &le) || errors.Is(err, context.DeadlineExceeded) || len(le.Checkouts) != 1 || le.Checkouts[0].Culprit.Line != line {
		t.Fatalf("Drain = %v; want the lost connection listed at once", err)
	}
}
