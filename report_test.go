package pgxleak_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// TestReportsDeduplicated: a leak in a loop is reported once per culprit
// and counted, not logged a hundred times.
func TestReportsDeduplicated(t *testing.T) {
	rec := &leaktest.Recorder{}
	var buf lockedBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(10), pgxleak.WithLeakThreshold(threshold), rec.Option(), pgxleak.WithLogger(logger))
	var conns []*sql.Conn
	var line site
	for range 10 {
		line = lineBelow()
		c, err := db.Conn(context.Background())
		require.NoError(t, err)
		conns = append(conns, c)
	}
	pgtest.WaitFor(t, 5*time.Second, "all ten to be suspected", func() bool { return pgxleak.Stats(db).Suspected == 10 })
	for _, c := range conns {
		c.Close()
	}
	pgtest.WaitFor(t, 5*time.Second, "all ten to resolve", func() bool { return pgxleak.Stats(db).Resolved == 10 })
	rec.Wait(t, 5*time.Second, resolvedAt(line))
	var suspected, resolved int
	for _, l := range rec.All() {
		if !isCulprit(line)(l) {
			t.Fatalf("culprit %s, want %s", l.Culprit, line)
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
	if n := strings.Count(buf.String(), `msg="pgxleak: suspected leak:`); n != 1 {
		t.Fatalf("%d log lines for one culprit:\n%s", n, buf.String())
	}
}

// TestLogReportLeadsWithCulprit: the default WARN line names the culprit
// once, in its message, and stays short: no stack and no checkout time,
// which are logged only at DEBUG (and are always in the Leak).
func TestLogReportLeadsWithCulprit(t *testing.T) {
	for _, tc := range []struct {
		level     slog.Level
		wantStack bool
	}{{slog.LevelInfo, false}, {slog.LevelDebug, true}} {
		t.Run(tc.level.String(), func(t *testing.T) {
			var buf lockedBuffer
			logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level}))
			rec := &leaktest.Recorder{}
			db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), pgxleak.WithLogger(logger), rec.Option())
			line := lineBelow()
			c, err := db.Conn(context.Background())
			require.NoError(t, err)
			defer c.Close()
			if l := rec.Wait(t, 5*time.Second, suspectedAt(line)); len(l.Stack) == 0 {
				t.Fatal("the Leak has no stack")
			}
			out := buf.String()
			want := fmt.Sprintf(`level=WARN msg="pgxleak: suspected leak: connection checked out at %s (pgxleak_test.TestLogReportLeadsWithCulprit.func1), held `, line.short())
			if !strings.Contains(out, want) || !strings.Contains(out, "kind=suspected") || strings.Contains(out, "stack=") != tc.wantStack {
				t.Fatalf("log:\n%s\nwant it to contain:\n%s (and a stack: %v)", out, want, tc.wantStack)
			}
			if n := strings.Count(out, line.String()); !tc.wantStack && n != 1 {
				t.Fatalf("the culprit appears %d times in the default line:\n%s", n, out)
			}
			if !tc.wantStack && len(out) > 400 {
				t.Fatalf("the default line is %d bytes:\n%s", len(out), out)
			}
		})
	}
}

// FuzzLeakRendering renders reports, checkouts and LeakErrors built from
// arbitrary values: no panic, and each rendering carries the parts it
// promises (culprit, repeats, pool, quoted statement, stack).
func FuzzLeakRendering(f *testing.F) {
	f.Add(1, "github.com/acme/app.(*Server).getUser", "/src/app/handler.go", 42, "SELECT * FROM users WHERE id = $1", "db:5432/app", int64(7*time.Second), uint32(81234), 0, false, uint8(3))
	f.Add(2, "", "", 0, "", "", int64(0), uint32(0), 3, false, uint8(0))
	f.Add(3, "main.main", "main.go", -1, "\"quoted\"\n\ttab", "p", int64(-1), uint32(1), -1, true, uint8(255))
	f.Add(99, "a/b.c", "/x/y/z.go", 1<<40, "SELECT '%s %d %v'", "%v", int64(1)<<62, uint32(1)<<31, 1<<30, true, uint8(1))
	f.Fuzz(func(t *testing.T, kind int, fn, file string, line int, stmt, pool string, held int64, pid uint32, repeats int, resolved bool, depth uint8) {
		culprit := pgxleak.Frame{Function: fn, File: file, Line: line}
		stack := make([]pgxleak.Frame, 0, int(depth)%16+1)
		for i := range cap(stack) - 1 {
			stack = append(stack, pgxleak.Frame{Function: "database/sql.f", File: "/sql.go", Line: i})
		}
		stack = append(stack, culprit)
		co := pgxleak.Checkout{Pool: pool, Culprit: culprit, Stack: stack, CheckedOutAt: time.Unix(0, held),
			Held: time.Duration(held), BackendPID: pid, LastStatement: stmt, TxStatus: "in transaction"}
		l := pgxleak.Leak{Kind: pgxleak.LeakKind(kind), Checkout: co, Resolved: resolved, Repeats: repeats}

		loc := culprit.String()
		if loc == "" {
			t.Fatal("Frame.String is empty")
		}
		s := l.String()
		if !strings.HasPrefix(s, "pgxleak: ") || !strings.Contains(s, loc) {
			t.Fatalf("Leak.String() = %q, want the culprit %q", s, loc)
		}
		if more := fmt.Sprintf("(+%d more like it)", repeats); (repeats > 0) != strings.Contains(s, more) {
			t.Fatalf("Leak.String() = %q with %d repeats", s, repeats)
		}
		if !strings.Contains(co.String(), loc) {
			t.Fatalf("Checkout.String() = %q", co.String())
		}
		st := co.StackString()
		var wantStack strings.Builder
		for _, fr := range stack {
			fmt.Fprintf(&wantStack, "%s()\n\t%s:%d\n", fr.Function, fr.File, fr.Line)
		}
		if st != wantStack.String() {
			t.Fatalf("StackString() = %q, want %q", st, wantStack.String())
		}
		want := map[int]string{1: "suspected", 2: "garbage_collected", 3: "still_out"}[kind]
		if want == "" {
			want = fmt.Sprintf("LeakKind(%d)", kind)
		}
		if got := l.Kind.String(); got != want {
			t.Fatalf("LeakKind(%d).String() = %q, want %q", kind, got, want)
		}
		le := &pgxleak.LeakError{Checkouts: []pgxleak.Checkout{co, co}}
		e := le.Error()
		if !strings.HasPrefix(e, "pgxleak: 2 connection(s) still checked out") || strings.Count(e, loc) < 2 ||
			!strings.Contains(e, "[pool "+pool) || !strings.Contains(e, st) {
			t.Fatalf("LeakError.Error() = %q", e)
		}
		if stmt != "" && !strings.Contains(e, fmt.Sprintf("last statement %q", stmt)) {
			t.Fatalf("LeakError.Error() = %q does not quote the statement", e)
		}
	})
}

// reportAt matches first reports of kind whose culprit is at.
func reportAt(kind pgxleak.LeakKind, at site) func(pgxleak.Leak) bool {
	return func(l pgxleak.Leak) bool { return l.Kind == kind && !l.Resolved && isCulprit(at)(l) }
}

// logTo returns a text logger writing to b.
func logTo(b *lockedBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

//go:noinline
func holdA(t *testing.T, db *sql.DB) *sql.Conn {
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	return c
}

//go:noinline
func holdB(t *testing.T, db *sql.DB) *sql.Conn {
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	return c
}

// TestSamplingDoesNotMergeLeaks: with stack sampling, two leaks from
// different functions on unsampled checkouts are two reports, each saying
// why it has no culprit; checkouts without a culprit are never merged.
func TestSamplingDoesNotMergeLeaks(t *testing.T) {
	rec := &leaktest.Recorder{}
	var logs lockedBuffer
	db, _ := openTest(t, pgxleak.WithStackSampling(3), pgxleak.WithMaxOpenConns(2),
		pgxleak.WithLeakThreshold(threshold), rec.Option(), pgxleak.WithLogger(logTo(&logs)))
	// The first checkout of each connection is sampled; the next two are not.
	c1, c2 := holdA(t, db), holdB(t, db)
	c1.Close()
	c2.Close()
	a, b := holdA(t, db), holdB(t, db)
	defer a.Close()
	defer b.Close()
	pgtest.WaitFor(t, 5*time.Second, "both to be suspected", func() bool { return pgxleak.Stats(db).Suspected == 2 })
	pgtest.WaitFor(t, 5*time.Second, "two reports", func() bool { return len(rec.All()) >= 2 })
	for _, l := range rec.All() {
		if l.Culprit != (pgxleak.Frame{}) || !strings.Contains(l.NoCulprit, "not sampled") || !strings.Contains(l.String(), "WithStackSampling(1)") {
			t.Fatalf("report %q (NoCulprit %q): want no culprit, and why", l, l.NoCulprit)
		}
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 2 {
		t.Fatalf("%d WARN lines for two leaks:\n%s", n, logs.String())
	}
}

// TestOneLeakOneReportPerKind: a connection whose Rows was garbage-collected
// is not reported again as suspected, and its still-out report at Close
// links to the earlier report; a suspected connection's still-out report
// links to the suspicion.
func TestOneLeakOneReportPerKind(t *testing.T) {
	rec := &leaktest.Recorder{}
	var logs lockedBuffer
	const slowThreshold = 3 * time.Second // far beyond the garbage collection
	dsn := pgtest.NewDatabase(t)
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithLeakThreshold(slowThreshold), rec.Option(), pgxleak.WithLogger(logTo(&logs)))
	require.NoError(t, err)
	defer db.Close()
	gcLine := leakRows(t, db)
	pgtest.WaitFor(t, 10*time.Second, "a garbage-collection report", func() bool {
		runtime.GC()
		return rec.Has(reportAt(pgxleak.LeakGarbageCollected, gcLine))
	})
	// A second leak, taken later: the scan that finds it past the
	// threshold finds the first one past it too.
	line := lineBelow()
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	defer c.Close()
	rec.Wait(t, 10*time.Second, reportAt(pgxleak.LeakSuspected, line))
	if rec.Has(reportAt(pgxleak.LeakSuspected, gcLine)) || pgxleak.Stats(db).Suspected != 1 {
		t.Fatalf("the garbage-collected connection was reported again as suspected: %v", rec.All())
	}
	db.Close()
	gone := rec.Wait(t, 5*time.Second, reportAt(pgxleak.LeakStillOut, gcLine))
	if gone.Earlier == nil || gone.Earlier.Kind != pgxleak.LeakGarbageCollected || !strings.Contains(gone.String(), "already reported as a leaked connection (Rows garbage-collected) at ") {
		t.Fatalf("still-out report %q does not link to the earlier one (%+v)", gone, gone.Earlier)
	}
	held := rec.Wait(t, 5*time.Second, reportAt(pgxleak.LeakStillOut, line))
	if held.Earlier == nil || held.Earlier.Kind != pgxleak.LeakSuspected || held.Earlier.At.Before(held.CheckedOutAt.Add(slowThreshold)) ||
		!strings.Contains(held.String(), "already reported as a suspected leak at ") {
		t.Fatalf("still-out report %q does not link to the suspicion (%+v)", held, held.Earlier)
	}
}

// TestSuppressedReportsSummarised: reports suppressed by de-duplication
// surface as a summary line within a report interval, with no further
// report to carry them; still-out reports are de-duplicated the same way,
// and their summary is written at Close.
func TestSuppressedReportsSummarised(t *testing.T) {
	rec := &leaktest.Recorder{}
	var logs lockedBuffer
	const interval = 300 * time.Millisecond
	dsn := pgtest.NewDatabase(t)
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithMaxOpenConns(3), pgxleak.WithLeakThreshold(threshold),
		pgxleak.WithReportInterval(interval), rec.Option(), pgxleak.WithLogger(logTo(&logs)))
	require.NoError(t, err)
	defer db.Close()
	var conns []*sql.Conn
	var line site
	for range 3 {
		line = lineBelow()
		c, err := db.Conn(context.Background())
		require.NoError(t, err)
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	first := rec.Wait(t, 5*time.Second, reportAt(pgxleak.LeakSuspected, line))
	loc := first.Culprit.String()
	want := fmt.Sprintf("2 more suspected leaks at %s since ", loc)
	pgtest.WaitFor(t, 10*time.Second, "a summary line", func() bool { return strings.Contains(logs.String(), want) })
	if st := pgxleak.Stats(db); st.Suspected != 3 {
		t.Fatalf("stats %+v", st)
	}
	db.Close()
	var stillOut int
	for _, l := range rec.All() {
		if reportAt(pgxleak.LeakStillOut, line)(l) {
			stillOut++
		}
	}
	if wantClose := fmt.Sprintf("2 more still-out connections (at Drain or Close) at %s since ", loc); stillOut != 1 || !strings.Contains(logs.String(), wantClose) {
		t.Fatalf("%d still-out reports for one line, want 1 and a summary line %q:\n%s", stillOut, wantClose, logs.String())
	}
}

// TestOnLeakMayCloseOrDrain: a callback that closes or drains the pool
// does not deadlock it.
func TestOnLeakMayCloseOrDrain(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(db *sql.DB) error
	}{
		{"Close", func(db *sql.DB) error { return db.Close() }},
		{"Drain", func(db *sql.DB) error {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			return pgxleak.Drain(ctx, db)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := pgtest.NewDatabase(t)
			var db *sql.DB
			ready := make(chan struct{})
			ended := make(chan error, 1)
			var once sync.Once
			db, err := pgxleak.Open("pgx", dsn, pgxleak.WithLeakThreshold(threshold), pgxleak.WithLogger(nil),
				pgxleak.WithOnLeak(func(pgxleak.Leak) {
					once.Do(func() {
						<-ready
						ended <- tc.end(db)
					})
				}))
			require.NoError(t, err)
			close(ready)
			c, err := db.Conn(context.Background())
			require.NoError(t, err)
			defer c.Close()
			select {
			case <-ended:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s from the OnLeak callback did not return: deadlock", tc.name)
			}
			if err := db.Ping(); err == nil {
				t.Fatal("the pool is still open")
			}
		})
	}
}

// TestNothingReportedAfterClose: a suspected connection that comes back
// after Close was reported as still out at Close; its return is neither
// counted nor queued for a report that would never be delivered.
func TestNothingReportedAfterClose(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.Option())
	line := lineBelow()
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	rec.Wait(t, 5*time.Second, reportAt(pgxleak.LeakSuspected, line))
	db.Close()
	rec.Wait(t, 5*time.Second, reportAt(pgxleak.LeakStillOut, line))
	c.Close() // database/sql closes it now
	if st := pgxleak.Stats(db); st.Resolved != 0 || st.Suspected != 1 || st.StillOut != 1 {
		t.Fatalf("stats %+v: a return after Close counted", st)
	}
}

// TestLogCallersAreTheApplications: the log line lists the application's
// frames above the culprit, without the library's, the standard library's
// or the test runner's.
func TestLogCallersAreTheApplications(t *testing.T) {
	var logs lockedBuffer
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), pgxleak.WithLogger(logTo(&logs)), rec.Option())
	line := lineBelow()
	c := holdA(t, db)
	defer c.Close()
	rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakSuspected })
	want := fmt.Sprintf(`callers="%s (pgxleak_test.TestLogCallersAreTheApplications)"`, line.short())
	if out := logs.String(); !strings.Contains(out, want) {
		t.Fatalf("log:\n%s\nwant %s", out, want)
	}
}

// TestNoGarbageCollectedReportAfterClose: a Rows garbage-collected after
// its pool closed (and reported the connection as still out) is neither
// counted nor queued for a report that no monitor would deliver.
func TestNoGarbageCollectedReportAfterClose(t *testing.T) {
	inner, _ := (&testdriver.Connector{}).Connect(context.Background())
	stillOut, collected, queued := pgxleak.CollectAfterClose(t, inner, pgxleak.WithLogger(quiet))
	if stillOut != 1 || collected != 0 || queued != 0 {
		t.Fatalf("%d still out at Close; after it %d garbage-collected counted and %d reports queued; want 1, 0, 0", stillOut, collected, queued)
	}
}
