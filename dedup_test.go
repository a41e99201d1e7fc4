package pgxleak_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
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
	pgtest.WaitFor(t, 5*time.Second, "all ten to be suspected", func() bool { return stats(t, db).Suspected == 10 })
	for _, c := range conns {
		c.Close()
	}
	pgtest.WaitFor(t, 5*time.Second, "all ten to resolve", func() bool { return stats(t, db).Resolved == 10 })
	rec.Wait(t, 5*time.Second, resolvedAt(line))
	var suspected, resolved int
	for _, l := range rec.All() {
		require.True(t, isCulprit(line)(l), "culprit %s, want %s", l.Culprit, line)
		if l.Kind == pgxleak.Resolved {
			resolved++
		} else {
			suspected++
		}
	}
	assert.Equal(t, 1, suspected, "suspected reports delivered")
	assert.Equal(t, 1, resolved, "resolved reports delivered")
	assert.Equal(t, 1, strings.Count(buf.String(), `msg="pgxleak: suspected leak:`), "log lines for one culprit:\n%s", buf.String())
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
	pgtest.WaitFor(t, 5*time.Second, "both to be suspected", func() bool { return stats(t, db).Suspected == 2 })
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
	require.EqualValues(t, 1, stats(t, db).Suspected, "the garbage-collected connection was reported again as suspected")
	db.Close()
	gone := rec.Wait(t, 5*time.Second, reportAt(pgxleak.LeakStillOut, gcLine))
	assert.Equal(t, pgxleak.LeakGarbageCollected, gone.Earlier, "still-out report %q links to the earlier one", gone)
	assert.Contains(t, gone.String(), "already reported as a leaked connection (Rows garbage-collected) at ")
	held := rec.Wait(t, 5*time.Second, reportAt(pgxleak.LeakStillOut, line))
	assert.Equal(t, pgxleak.LeakSuspected, held.Earlier, "still-out report %q links to the suspicion", held)
	assert.False(t, held.EarlierAt.Before(held.CheckedOutAt.Add(slowThreshold)), "the suspicion came before the threshold (at %v)", held.EarlierAt)
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
	// Without the server's view: a checkout past the threshold may wait up
	// to half a second for it (serverWait), longer than the interval, and
	// on a loaded machine the three would then be judged in different
	// intervals. De-duplication is what this test is about.
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithMaxOpenConns(3), pgxleak.WithLeakThreshold(threshold),
		pgxleak.WithReportInterval(interval), rec.Option(), pgxleak.WithLogger(logTo(&logs)), pgxleak.WithoutServerView())
	require.NoError(t, err)
	defer db.Close()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the log:\n%s", logs.String())
		}
	})
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
	require.EqualValues(t, 3, stats(t, db).Suspected, "suspected leaks")
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
