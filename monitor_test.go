package pgxleak_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
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
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), pgxleak.WithLogger(logTo(&logs)), rec.option())
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

// TestBlockedNotSuspected: a checkout held past the leak threshold because
// its statement waits for a leaked transaction's row lock is one "blocked"
// record naming the leak's line, not a suspected leak; the leak itself is
// the suspected one, and names the PID it blocks.
func TestBlockedNotSuspected(t *testing.T) {
	var logs lockedBuffer
	rec := newLeakRecorder()
	db, dsn := openTest(t, rec.option(), pgxleak.WithLeakThreshold(300*time.Millisecond),
		pgxleak.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	pgtest.Exec(t, dsn, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	leak, leakAt := leakLockedTx(t, db)
	defer leak.Rollback()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	blockedAt := make(chan site, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		blockedAt <- lineBelow()
		_, _ = db.ExecContext(ctx, "UPDATE t SET id = 1 WHERE id = 1") // blocks until the leak ends
	}()
	at := <-blockedAt
	b := rec.wait(t, 10*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.Blocked })
	rec.wait(t, 10*time.Second, suspectedAt(leakAt))
	assert.True(t, isCulprit(at)(b), "the blocked checkout is the one at %v: %s", at, b)
	assert.Contains(t, b.String(), "blocked, not a leak: connection checked out at "+at.short())
	assert.Contains(t, b.String(), "checked out at "+leakAt.short())
	assert.Contains(t, b.String(), ": fix that line")

	require.NoError(t, leak.Rollback()) // the blocked statement goes on, and its connection comes back
	<-done
	pgtest.WaitFor(t, 5*time.Second, "every connection back", func() bool { return len(checkouts(t, db)) == 0 })
	assert.False(t, hasLeak(rec, suspectedAt(at)), "the blocked checkout was reported as a suspected leak: %v", rec.all())
	assert.False(t, hasLeak(rec, resolvedAt(at)), "the blocked checkout got a resolved follow-up: %v", rec.all())
	out := logs.String()
	assert.Equal(t, 1, strings.Count(out, "kind=blocked"), "one blocked record:\n%s", out)
	assert.Contains(t, out, `level=WARN msg="pgxleak: blocked, not a leak: connection checked out at `+at.short())
	assert.Equal(t, 1, strings.Count(out, "msg=\"pgxleak: suspected leak:"), "one suspected leak, the leaked transaction:\n%s", out)
	assert.EqualValues(t, 1, stats(t, db).Suspected, "only the leaked transaction counts as suspected")
}
