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
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/testdriver"
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
			assert.Contains(t, out, fmt.Sprintf(`level=WARN msg="pgxleak: suspected leak: connection checked out at %s (pgxleak_test.TestLogReportLeadsWithCulprit.func1), held `, line.Short()))
			assert.Contains(t, out, "kind=suspected")
			assert.Equal(t, tc.wantStack, strings.Contains(out, "stack="), "a stack in the log:\n%s", out)
			if !tc.wantStack {
				assert.Equal(t, 1, strings.Count(out, line.String()), "the culprit's count in the default line:\n%s", out)
				// 460: the holder's verdict names this test's long closure
				// again ("still inside pgxleak_test.TestLog…func1").
				assert.LessOrEqual(t, len(out), 460, "the default line's length:\n%s", out)
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
	st := stats(t, db)
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
	// At DEBUG: a default line under 300 bytes may drop the callers for the verdict.
	debug := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), pgxleak.WithLogger(debug), rec.Option())
	line := lineBelow()
	c := holdA(t, db)
	defer c.Close()
	rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakSuspected })
	assert.Contains(t, logs.String(), fmt.Sprintf(`callers="%s (pgxleak_test.TestLogCallersAreTheApplications)"`, line.Short()))
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

// TestBlockedNotSuspected: a checkout held past the leak threshold because
// its statement waits for a leaked transaction's row lock is one "blocked"
// record naming the leak's line, not a suspected leak; the leak itself is
// the suspected one, and names the PID it blocks.
func TestBlockedNotSuspected(t *testing.T) {
	var logs lockedBuffer
	rec := &leaktest.Recorder{}
	db, dsn := openTest(t, rec.Option(), pgxleak.WithLeakThreshold(300*time.Millisecond),
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
	b := rec.Wait(t, 10*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.Blocked })
	rec.Wait(t, 10*time.Second, suspectedAt(leakAt))
	assert.True(t, isCulprit(at)(b), "the blocked checkout is the one at %v: %s", at, b)
	assert.Contains(t, b.String(), "blocked, not a leak: connection checked out at "+at.Short())
	assert.Contains(t, b.String(), "checked out at "+leakAt.Short())
	assert.Contains(t, b.String(), ": fix that line")

	require.NoError(t, leak.Rollback()) // the blocked statement goes on, and its connection comes back
	<-done
	pgtest.WaitFor(t, 5*time.Second, "every connection back", func() bool { return len(checkouts(t, db)) == 0 })
	assert.False(t, rec.Has(suspectedAt(at)), "the blocked checkout was reported as a suspected leak: %v", rec.All())
	assert.False(t, rec.Has(resolvedAt(at)), "the blocked checkout got a resolved follow-up: %v", rec.All())
	out := logs.String()
	assert.Equal(t, 1, strings.Count(out, "kind=blocked"), "one blocked record:\n%s", out)
	assert.Contains(t, out, `level=WARN msg="pgxleak: blocked, not a leak: connection checked out at `+at.Short())
	assert.Equal(t, 1, strings.Count(out, "msg=\"pgxleak: suspected leak:"), "one suspected leak, the leaked transaction:\n%s", out)
	assert.EqualValues(t, 1, stats(t, db).Suspected, "only the leaked transaction counts as suspected")
}
