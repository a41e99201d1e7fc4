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

	"github.com/stretchr/testify/assert"
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
		require.True(t, isCulprit(line)(l), "culprit %s, want %s", l.Culprit, line)
		if l.Resolved {
			resolved++
		} else {
			suspected++
		}
	}
	assert.Equal(t, 1, suspected, "suspected reports delivered")
	assert.Equal(t, 1, resolved, "resolved reports delivered")
	assert.Equal(t, 1, strings.Count(buf.String(), `msg="pgxleak: suspected leak:`), "log lines for one culprit:\n%s", buf.String())
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
			leaks := make(chan pgxleak.Leak, 16)
			db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), pgxleak.WithLogger(logger), pgxleak.WithOnLeak(func(l pgxleak.Leak) {
				select {
				case leaks <- l:
				default:
				}
			}))
			line := lineBelow()
			c, err := db.Conn(context.Background())
			require.NoError(t, err)
			defer c.Close()
			// The report names where its holder, this goroutine, waits: it
			// waits here, not in a shared helper, whose long name would
			// count against the line's length.
			timeout := time.After(5 * time.Second)
			var l pgxleak.Leak
			for !suspectedAt(line)(l) {
				select {
				case l = <-leaks:
				case <-timeout:
					require.FailNow(t, "no suspected-leak report")
				}
			}
			require.NotEmpty(t, l.Stack, "the Leak has no stack")
			out := buf.String()
			assert.Contains(t, out, fmt.Sprintf(`level=WARN msg="pgxleak: suspected leak: connection checked out at %s (pgxleak_test.TestLogReportLeadsWithCulprit.func1), held `, line.short()))
			assert.Contains(t, out, "kind=suspected")
			assert.Equal(t, tc.wantStack, strings.Contains(out, "stack="), "a stack in the log:\n%s", out)
			if !tc.wantStack {
				assert.Equal(t, 1, strings.Count(out, line.String()), "the culprit's count in the default line:\n%s", out)
				assert.LessOrEqual(t, len(out), 400, "the default line's length:\n%s", out)
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
		require.NotEmpty(t, loc, "Frame.String")
		s := l.String()
		require.True(t, strings.HasPrefix(s, "pgxleak: "), "Leak.String() = %q", s)
		require.Contains(t, s, loc, "Leak.String() names the culprit")
		require.Equal(t, repeats > 0, strings.Contains(s, fmt.Sprintf("(+%d more like it)", repeats)), "Leak.String() = %q with %d repeats", s, repeats)
		require.Contains(t, co.String(), loc, "Checkout.String() names the culprit")
		st := co.StackString()
		var wantStack strings.Builder
		for _, fr := range stack {
			fmt.Fprintf(&wantStack, "%s()\n\t%s:%d\n", fr.Function, fr.File, fr.Line)
		}
		require.Equal(t, wantStack.String(), st, "StackString()")
		want := map[int]string{1: "suspected", 2: "garbage_collected", 3: "still_out"}[kind]
		if want == "" {
			want = fmt.Sprintf("LeakKind(%d)", kind)
		}
		require.Equal(t, want, l.Kind.String(), "LeakKind(%d).String()", kind)
		le := &pgxleak.LeakError{Checkouts: []pgxleak.Checkout{co, co}}
		e := le.Error()
		require.True(t, strings.HasPrefix(e, "pgxleak: 2 connection(s) still checked out"), "LeakError.Error() = %q", e)
		require.GreaterOrEqual(t, strings.Count(e, loc), 2, "LeakError.Error() names both culprits: %q", e)
		require.Contains(t, e, "[pool "+pool)
		require.Contains(t, e, st)
		if stmt != "" {
			require.Contains(t, e, fmt.Sprintf("last statement %q", stmt), "LeakError.Error() quotes the statement")
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
		assert.Zero(t, l.Culprit, "an unsampled checkout has no culprit")
		assert.Contains(t, l.NoCulprit, "not sampled", "the report says why")
		assert.Contains(t, l.String(), "WithStackSampling(1)", "the report says what to do")
	}
	assert.Equal(t, 2, strings.Count(logs.String(), "level=WARN"), "WARN lines for two leaks:\n%s", logs.String())
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
	require.False(t, rec.Has(reportAt(pgxleak.LeakSuspected, gcLine)), "the garbage-collected connection was reported again as suspected: %v", rec.All())
	require.EqualValues(t, 1, pgxleak.Stats(db).Suspected, "the garbage-collected connection was reported again as suspected")
	db.Close()
	gone := rec.Wait(t, 5*time.Second, reportAt(pgxleak.LeakStillOut, gcLine))
	require.NotNil(t, gone.Earlier, "still-out report %q does not link to the earlier one", gone)
	assert.Equal(t, pgxleak.LeakGarbageCollected, gone.Earlier.Kind, "the earlier report")
	assert.Contains(t, gone.String(), "already reported as a leaked connection (Rows garbage-collected) at ")
	held := rec.Wait(t, 5*time.Second, reportAt(pgxleak.LeakStillOut, line))
	require.NotNil(t, held.Earlier, "still-out report %q does not link to the suspicion", held)
	assert.Equal(t, pgxleak.LeakSuspected, held.Earlier.Kind, "the earlier report")
	assert.False(t, held.Earlier.At.Before(held.CheckedOutAt.Add(slowThreshold)), "the suspicion came before the threshold (%+v)", held.Earlier)
	assert.Contains(t, held.String(), "already reported as a suspected leak at ")
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
	require.EqualValues(t, 3, pgxleak.Stats(db).Suspected, "suspected leaks")
	db.Close()
	var stillOut int
	for _, l := range rec.All() {
		if reportAt(pgxleak.LeakStillOut, line)(l) {
			stillOut++
		}
	}
	assert.Equal(t, 1, stillOut, "still-out reports for one line")
	assert.Contains(t, logs.String(), fmt.Sprintf("2 more still-out connections (at Drain or Close) at %s since ", loc), "the summary line")
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
				require.FailNowf(t, "deadlock", "%s from the OnLeak callback did not return", tc.name)
			}
			assert.Error(t, db.Ping(), "the pool is still open")
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
	st := pgxleak.Stats(db)
	assert.Zero(t, st.Resolved, "a return after Close counted")
	assert.EqualValues(t, 1, st.Suspected, "suspected leaks")
	assert.EqualValues(t, 1, st.StillOut, "still-out reports")
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
	assert.Contains(t, logs.String(), fmt.Sprintf(`callers="%s (pgxleak_test.TestLogCallersAreTheApplications)"`, line.short()))
}

// TestNoGarbageCollectedReportAfterClose: a Rows garbage-collected after
// its pool closed (and reported the connection as still out) is neither
// counted nor queued for a report that no monitor would deliver.
func TestNoGarbageCollectedReportAfterClose(t *testing.T) {
	inner, _ := (&testdriver.Connector{}).Connect(context.Background())
	stillOut, collected, queued := pgxleak.CollectAfterClose(t, inner, pgxleak.WithLogger(quiet))
	assert.EqualValues(t, 1, stillOut, "still out at Close")
	assert.Zero(t, collected, "garbage-collected connections counted after Close")
	assert.Zero(t, queued, "reports queued after Close")
}
