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

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestReportsDeduplicated: a leak in a loop is reported once per culprit
// and counted, not logged a hundred times.
func TestReportsDeduplicated(t *testing.T) {
	rec := newLeakRecorder()
	var buf lockedBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(10), pgxleak.WithLeakThreshold(threshold), rec.option(), pgxleak.WithLogger(logger))
	var conns []*sql.Conn
	var line site
	for range 10 {
		line = lineBelow()
		c, err := db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	pgtest.WaitFor(t, 5*time.Second, "all ten to be suspected", func() bool { return stats(t, db).Suspected == 10 })
	for _, c := range conns {
		c.Close()
	}
	pgtest.WaitFor(t, 5*time.Second, "all ten to resolve", func() bool { return stats(t, db).Resolved == 10 })
	rec.wait(t, 5*time.Second, resolvedAt(line))
	var suspected, resolved int
	for _, l := range rec.all() {
		if !isCulprit(line)(l) {
			t.Fatalf("culprit %s, want %s", l.Culprit, line)
		}
		if l.Kind == pgxleak.Resolved {
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

// TestSamplingDoesNotMergeLeaks: with stack sampling, two leaks from
// different functions on unsampled checkouts are two reports, each saying
// why it has no culprit; checkouts without a culprit are never merged.
func TestSamplingDoesNotMergeLeaks(t *testing.T) {
	rec := newLeakRecorder()
	var logs lockedBuffer
	db, _ := openTest(t, pgxleak.WithStackSampling(3), pgxleak.WithMaxOpenConns(2),
		pgxleak.WithLeakThreshold(threshold), rec.option(), pgxleak.WithLogger(logTo(&logs)))
	// The first checkout of each connection is sampled; the next two are not.
	c1, c2 := holdA(t, db), holdB(t, db)
	c1.Close()
	c2.Close()
	a, b := holdA(t, db), holdB(t, db)
	defer a.Close()
	defer b.Close()
	pgtest.WaitFor(t, 5*time.Second, "both to be suspected", func() bool { return stats(t, db).Suspected == 2 })
	pgtest.WaitFor(t, 5*time.Second, "two reports", func() bool { return len(rec.all()) >= 2 })
	for _, l := range rec.all() {
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
	rec := newLeakRecorder()
	var logs lockedBuffer
	const slowThreshold = 3 * time.Second // far beyond the garbage collection
	dsn := pgtest.NewDatabase(t)
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithLeakThreshold(slowThreshold), rec.option(), pgxleak.WithLogger(logTo(&logs)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	gcLine := leakRows(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !hasLeak(rec, reportAt(pgxleak.LeakGarbageCollected, gcLine)) {
		runtime.GC()
		select {
		case <-rec.added:
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("no garbage-collection report; got %v", rec.all())
		}
	}
	// A second leak, taken later: the scan that finds it past the
	// threshold finds the first one past it too.
	line := lineBelow()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rec.wait(t, 10*time.Second, reportAt(pgxleak.LeakSuspected, line))
	if hasLeak(rec, reportAt(pgxleak.LeakSuspected, gcLine)) || stats(t, db).Suspected != 1 {
		t.Fatalf("the garbage-collected connection was reported again as suspected: %v", rec.all())
	}
	db.Close()
	gone := rec.wait(t, 5*time.Second, reportAt(pgxleak.LeakStillOut, gcLine))
	if gone.Earlier != pgxleak.LeakGarbageCollected || !strings.Contains(gone.String(), "already reported as a leaked connection (Rows garbage-collected) at ") {
		t.Fatalf("still-out report %q does not link to the earlier one (%+v)", gone, gone.Earlier)
	}
	held := rec.wait(t, 5*time.Second, reportAt(pgxleak.LeakStillOut, line))
	if held.Earlier != pgxleak.LeakSuspected || held.EarlierAt.Before(held.CheckedOutAt.Add(slowThreshold)) ||
		!strings.Contains(held.String(), "already reported as a suspected leak at ") {
		t.Fatalf("still-out report %q does not link to the suspicion (%+v)", held, held.Earlier)
	}
}

// TestSuppressedReportsSummarised: reports suppressed by de-duplication
// surface as a summary line within a report interval, with no further
// report to carry them; still-out reports are de-duplicated the same way,
// and their summary is written at Close.
func TestSuppressedReportsSummarised(t *testing.T) {
	rec := newLeakRecorder()
	var logs lockedBuffer
	const interval = 300 * time.Millisecond
	dsn := pgtest.NewDatabase(t)
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithMaxOpenConns(3), pgxleak.WithLeakThreshold(threshold),
		pgxleak.WithReportInterval(interval), rec.option(), pgxleak.WithLogger(logTo(&logs)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var conns []*sql.Conn
	var line site
	for range 3 {
		line = lineBelow()
		c, err := db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	first := rec.wait(t, 5*time.Second, reportAt(pgxleak.LeakSuspected, line))
	loc := first.Culprit.String()
	want := fmt.Sprintf("2 more suspected leaks at %s since ", loc)
	pgtest.WaitFor(t, 10*time.Second, "a summary line", func() bool { return strings.Contains(logs.String(), want) })
	if st := stats(t, db); st.Suspected != 3 {
		t.Fatalf("stats %+v", st)
	}
	db.Close()
	var stillOut int
	for _, l := range rec.all() {
		if reportAt(pgxleak.LeakStillOut, line)(l) {
			stillOut++
		}
	}
	if wantClose := fmt.Sprintf("2 more still-out connections (at Drain or Close) at %s since ", loc); stillOut != 1 || !strings.Contains(logs.String(), wantClose) {
		t.Fatalf("%d still-out reports for one line, want 1 and a summary line %q:\n%s", stillOut, wantClose, logs.String())
	}
}
