package pgxleak_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestSelfDeadlock: the classic nested query on a pool of one. A deadlock
// report comes within 2 s of the wait, at ERROR, naming both lines.
func TestSelfDeadlock(t *testing.T) {
	rec := &leaktest.Recorder{}
	var logs lockedBuffer
	db, _ := openTest(t, rec.Option(), pgxleak.WithMaxOpenConns(1),
		pgxleak.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines := make(chan [2]site, 1)
	waiting := make(chan time.Time, 1)
	done := make(chan error)
	go func() {
		rowsLine := lineBelow()
		rows, err := db.QueryContext(ctx, "SELECT generate_series(1, 3)")
		if err != nil {
			done <- err
			return
		}
		defer rows.Close()
		for rows.Next() {
			var n int
			nestedLine := lineBelow()
			nestedLine.Line += 3
			lines <- [2]site{rowsLine, nestedLine}
			waiting <- time.Now()
			err := db.QueryRowContext(ctx, "SELECT 1").Scan(&n) // waits for the connection it holds
			done <- err
			return
		}
		done <- rows.Err()
	}()
	l := <-lines
	start := <-waiting
	d := rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.Deadlock })
	assert.LessOrEqual(t, time.Since(start), 2*time.Second+500*time.Millisecond, "the deadlock is reported within about 2s of the wait")
	cancel()
	assert.Error(t, <-done, "the nested query succeeded; it should have waited until cancelled")
	assert.Equal(t, l[0].Line, d.Culprit.Line, "the deadlock holds at %v", l[0])
	assert.Equal(t, l[1].Line, d.WaitingAt.Line, "the deadlock waits at %v", l[1])
	assert.True(t, d.PoolDeadlocked, "a pool of one held by its only waiter is deadlocked as a whole: %s", d)
	s := d.String()
	for _, want := range []string{
		"pgxleak: deadlock: goroutine ",
		l[1].Short(),
		l[0].Short(),
		"the whole pool is deadlocked",
	} {
		assert.Contains(t, s, want)
	}
	assert.Contains(t, logs.String(), "level=ERROR msg=\"pgxleak: deadlock:", "the deadlock's ERROR log line")
}

// TestPoolDeadlocked: three connections, each held by a goroutine that
// waits for a fourth.
func TestPoolDeadlocked(t *testing.T) {
	rec := &leaktest.Recorder{}
	var logs lockedBuffer
	db, _ := openTest(t, rec.Option(), pgxleak.WithMaxOpenConns(3), pgxleak.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var holding, wg sync.WaitGroup
	holding.Add(3)
	lines := make(chan [2]site, 3)
	for range 3 {
		wg.Go(func() {
			txLine := lineBelow()
			tx, err := db.BeginTx(ctx, nil)
			if !assert.NoError(t, err) {
				holding.Done()
				return
			}
			defer tx.Rollback()
			holding.Done()
			holding.Wait() // all three hold one before any asks for another
			var n int
			lines <- [2]site{txLine, lineBelow()}
			_ = db.QueryRowContext(ctx, "SELECT 1").Scan(&n)
		})
	}
	l := <-lines
	in := inspectUntil(t, db, "the pool deadlocked", func(in pgxleak.Inspection) bool { return in.Deadlocked })
	assert.Len(t, in.Waiters, 3)
	for _, w := range in.Waiters {
		assert.True(t, w.At.Line == l[1].Line && len(w.Holds) == 1 && w.Holds[0].Culprit.Line == l[0].Line,
			"waiter at line %d holding %+v; want %v holding the checkout at %v", w.At.Line, w.Holds, l[1], l[0])
	}
	// One report per line (reports are de-duplicated by line), and an
	// ERROR line that says the whole pool is deadlocked: the deadlock's
	// own, or, when the dump saw the whole only after the deadlock was
	// logged, one for the pool.
	rec.Wait(t, 5*time.Second, func(d pgxleak.Leak) bool {
		return d.Kind == pgxleak.Deadlock && d.Culprit.Line == l[0].Line && d.WaitingAt.Line == l[1].Line
	})
	pgtest.WaitFor(t, 5*time.Second, "the pool's deadlock logged", func() bool {
		out := logs.String()
		return strings.Contains(out, "level=ERROR msg=\"pgxleak: pool deadlocked: all 3 connections are held by goroutines that are themselves waiting") ||
			strings.Contains(out, "the whole pool is deadlocked") ||
			// the headline cut to 300 bytes: the attribute says it
			strings.Contains(out, "level=ERROR msg=\"pgxleak: deadlock:") && strings.Contains(out, "pool_deadlocked=true")
	})
	cancel()
	wg.Wait()
	assert.NotContains(t, logs.String(), "level=WARN", "a deadlock is logged at ERROR only")
}

// TestExhaustedWarning: a pool of 2 with 2 leaks and 10 waiters gives one
// WARN naming the waiters' and the holders' lines. The pool is opened with
// 5 and limited to 2 by db.SetMaxOpenConns: the warning gives the limit in
// force.
func TestExhaustedWarning(t *testing.T) {
	var logs lockedBuffer
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(5), pgxleak.WithWaitSampleInterval(500*time.Millisecond),
		pgxleak.WithPoolName("orders"), // the test database's long name would crowd the 300-byte line
		pgxleak.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	db.SetMaxOpenConns(2)
	leakLine := make(chan site, 2)
	var txs [2]*txHolder
	for i := range txs {
		got := make(chan *txHolder)
		go func() { // leaks a transaction and returns
			line := lineBelow()
			tx, err := db.Begin()
			if assert.NoError(t, err) {
				_, err := tx.Exec("SELECT 1")
				assert.NoError(t, err)
			}
			leakLine <- line
			got <- &txHolder{tx}
		}()
		txs[i] = <-got
	}
	held := <-leakLine
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	waitLine := make(chan site, 10)
	start := time.Now()
	for range 10 {
		wg.Go(func() {
			var n int
			waitLine <- lineBelow()
			_ = db.QueryRowContext(ctx, "SELECT 1").Scan(&n)
		})
	}
	w := <-waitLine
	want := "pool exhausted for "
	pgtest.WaitFor(t, 5*time.Second, "the exhaustion warning", func() bool { return strings.Contains(logs.String(), want) })
	assert.LessOrEqual(t, time.Since(start), 2*time.Second, "the warning comes within about 1.5s")
	cancel()
	wg.Wait()
	for _, tx := range txs {
		_ = tx.tx.Rollback()
	}
	out := logs.String()
	assert.Equal(t, 1, strings.Count(out, want), "exhaustion warnings:\n%s", out)
	for _, part := range []string{
		"level=WARN",
		"(leaking): 10 goroutines waiting (" + w.Short() + " ×10)", // the verdict's word first
		"10 goroutines waiting (" + w.Short() + " ×10)",
		"2/2 connections held by " + held.Short() + " ×2 (goroutine exited, idle in transaction)",
	} {
		assert.Contains(t, out, part)
	}
}

type txHolder struct{ tx interface{ Rollback() error } }

// TestSelfDeadlockOneLine: one self-deadlock is one log line, an ERROR.
// Held past the leak threshold and stalled past the slow-wait threshold,
// it gets no "pool exhausted" WARN, no "suspected leak" WARN and no
// second ERROR for the whole pool: the deadlock's line says it all.
func TestSelfDeadlockOneLine(t *testing.T) {
	const leakAfter = 300 * time.Millisecond
	var logs lockedBuffer
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(1), pgxleak.WithLeakThreshold(leakAfter),
		pgxleak.WithSlowWaitThreshold(100*time.Millisecond), pgxleak.WithWaitSampleInterval(50*time.Millisecond),
		pgxleak.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tx, err := db.BeginTx(ctx, nil)
		if !assert.NoError(t, err) {
			return
		}
		defer tx.Rollback()
		var n int
		_ = db.QueryRowContext(ctx, "SELECT 1").Scan(&n) // waits for the connection tx holds
	}()
	// Past every threshold that could add a line: the leak threshold (3×)
	// and the slow-wait threshold, with the deadlock reported.
	pgtest.WaitFor(t, 10*time.Second, "the deadlock held for 3× the leak threshold", func() bool {
		cs := checkouts(t, db)
		return len(cs) == 1 && cs[0].Held >= 3*leakAfter && strings.Contains(logs.String(), "pgxleak: deadlock:")
	})
	cancel()
	<-done
	var lines []string
	for l := range strings.Lines(logs.String()) {
		lines = append(lines, l)
	}
	require.Len(t, lines, 1, "one self-deadlock, one log line:\n%s", logs.String())
	assert.Contains(t, lines[0], `level=ERROR msg="pgxleak: deadlock:`)
	// The headline may be cut to fit 300 bytes; the attribute always says it.
	assert.Contains(t, lines[0], "pool_deadlocked=true")
}

// TestExhaustedWarningRefersToDeadlock: a pool of two, one connection held
// by a goroutine that waits for the other (a deadlock), the other held by
// the test. The exhaustion warning names the deadlocked holder as such,
// pointing to its ERROR, rather than describing it again.
func TestExhaustedWarningRefersToDeadlock(t *testing.T) {
	var logs lockedBuffer
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(2), pgxleak.WithWaitSampleInterval(50*time.Millisecond),
		pgxleak.WithPoolName("orders"), // the test database's long name would crowd the 300-byte line
		pgxleak.WithSlowWaitThreshold(100*time.Millisecond), pgxleak.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held, err := db.Conn(ctx)
	require.NoError(t, err)
	defer held.Close()
	txAt := make(chan site, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		txAt <- lineBelow()
		tx, err := db.BeginTx(ctx, nil)
		if !assert.NoError(t, err) {
			return
		}
		defer tx.Rollback()
		_, _ = db.ExecContext(ctx, "SELECT 1") // waits for the connection the test holds
	}()
	at := <-txAt
	pgtest.WaitFor(t, 10*time.Second, "the exhaustion warning", func() bool { return strings.Contains(logs.String(), "pool exhausted for ") })
	cancel()
	<-done
	out := logs.String()
	assert.Contains(t, out, `level=ERROR msg="pgxleak: deadlock:`)
	// The whole headline is in the report (the log line is bounded to 300 bytes).
	in, err := pgxleak.Inspect(context.Background(), db)
	require.NoError(t, err)
	i := slices.IndexFunc(in.Reports, func(r pgxleak.Report) bool { return r.Kind == pgxleak.Exhausted })
	require.GreaterOrEqual(t, i, 0, "the exhaustion report in %+v", in.Reports)
	assert.Contains(t, in.Reports[i].Headline, at.Short()+" ×1 (deadlocked: see the deadlock reported at ERROR)")
	assert.Equal(t, 1, strings.Count(out, "level=ERROR"), "one ERROR for the deadlock:\n%s", out)
}
