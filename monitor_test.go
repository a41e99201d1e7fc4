package pgxleak_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgxleak/pgxleak"
)

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
			rec := newLeakRecorder()
			db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), pgxleak.WithLogger(logger), rec.option())
			line := lineBelow()
			c, err := db.Conn(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if l := rec.wait(t, 5*time.Second, suspectedAt(line)); len(l.Stack) == 0 {
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

// TestNothingReportedAfterClose: a suspected connection that comes back
// after Close was reported as still out at Close; its return is neither
// counted nor queued for a report that would never be delivered.
func TestNothingReportedAfterClose(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.option())
	line := lineBelow()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 5*time.Second, reportAt(pgxleak.LeakSuspected, line))
	db.Close()
	rec.wait(t, 5*time.Second, reportAt(pgxleak.LeakStillOut, line))
	c.Close() // database/sql closes it now
	if st := stats(t, db); st.Resolved != 0 || st.Suspected != 1 || st.StillOut != 1 {
		t.Fatalf("stats %+v: a return after Close counted", st)
	}
}

// TestLogCallersAreTheApplications: the log line lists the application's
// frames above the culprit, without the library's, the standard library's
// or the test runner's.
func TestLogCallersAreTheApplications(t *testing.T) {
	var logs lockedBuffer
	rec := newLeakRecorder()
	// At DEBUG: a default line under 300 bytes may drop the callers for the verdict.
	debug := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), pgxleak.WithLogger(debug), rec.option())
	line := lineBelow()
	c := holdA(t, db)
	defer c.Close()
	rec.wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakSuspected })
	want := fmt.Sprintf(`callers="%s (pgxleak_test.TestLogCallersAreTheApplications)"`, line.short())
	if out := logs.String(); !strings.Contains(out, want) {
		t.Fatalf("log:\n%s\nwant %s", out, want)
	}
}

// TestNoGarbageCollectedReportAfterClose: a Rows garbage-collected after
// its pool closed (and reported the connection as still out) is neither
// counted nor queued for a report that no monitor would deliver.
func TestNoGarbageCollectedReportAfterClose(t *testing.T) {
	stillOut, collected, queued := pgxleak.CollectAfterClose(t, &fakeConn{connector: &fakeConnector{}}, pgxleak.WithLogger(quiet))
	if stillOut != 1 || collected != 0 || queued != 0 {
		t.Fatalf("%d still out at Close; after it %d garbage-collected counted and %d reports queued; want 1, 0, 0", stillOut, collected, queued)
	}
}
