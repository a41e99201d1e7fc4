package pgxleak_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

func TestDrainWaitsForReturns(t *testing.T) {
	db, _ := openTest(t)
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
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
		require.FailNowf(t, "Drain returned while a connection was out", "Drain = %v", err)
	default:
	}
	_, err = c.ExecContext(context.Background(), "SELECT 1")
	require.NoError(t, err, "a connection already out must keep working during drain")
	c.Close()
	require.NoError(t, <-drained, "Drain")
	assert.Error(t, db.Ping(), "the pool is still open after Drain")
}

func TestDrainReportsLeftovers(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, rec.Option())
	line := lineBelow()
	tx, err := db.Begin()
	require.NoError(t, err)
	defer tx.Rollback()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = pgxleak.Drain(ctx, db)
	var le *pgxleak.LeakError
	require.ErrorAs(t, err, &le, "Drain")
	require.Len(t, le.Checkouts, 1, "Drain")
	require.ErrorIs(t, err, context.DeadlineExceeded, "Drain")
	require.ErrorContains(t, err, line.String(), "the Drain error names the culprit line")
	rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut && isCulprit(line)(l) })
	assert.EqualValues(t, 1, stats(t, db).StillOut, "still-out reports")
}

// TestDrainDoesNotWaitForGarbageCollectedLeaks: a connection whose Rows
// was garbage-collected never comes back, so Drain reports it at once
// instead of waiting for ctx.
func TestDrainDoesNotWaitForGarbageCollectedLeaks(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, rec.Option())
	line := leakRows(t, db)
	pgtest.WaitFor(t, 10*time.Second, "a garbage-collection report", func() bool {
		runtime.GC()
		return stats(t, db).GarbageCollected != 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := pgxleak.Drain(ctx, db)
	var le *pgxleak.LeakError
	require.ErrorAs(t, err, &le, "Drain")
	require.NotErrorIs(t, err, context.DeadlineExceeded, "Drain waited for a lost connection")
	require.Len(t, le.Checkouts, 1, "Drain lists the lost connection")
	assert.Equal(t, line.line, le.Checkouts[0].Culprit.Line, "the lost connection's culprit")
}

// TestDrainResetInFlight: a checkout of an idle connection whose session
// reset is under way when Drain starts must not be handed out once Drain
// has looked: ResetSession checks for draining under the connection's
// lock, which Drain takes for every connection.
func TestDrainResetInFlight(t *testing.T) {
	fc := &testdriver.Connector{}
	db, err := pgxleak.OpenDB(fc, pgxleak.WithMaxOpenConns(1), pgxleak.WithLogger(nil))
	require.NoError(t, err)
	require.NoError(t, db.Ping()) // opens the connection and returns it
	entered, release := make(chan struct{}), make(chan struct{})
	fc.Reset = func(context.Context) error { // set before any other goroutine calls ResetSession
		entered <- struct{}{}
		<-release
		return nil
	}
	before := stats(t, db).Checkouts
	connErr := make(chan error, 1)
	go func() {
		c, err := db.Conn(context.Background())
		if err == nil {
			c.Close()
		}
		connErr <- err
	}()
	<-entered // the reset is under way
	drained := make(chan error, 1)
	go func() { drained <- pgxleak.Drain(context.Background(), db) }()
	pgtest.WaitFor(t, 5*time.Second, "Drain to start", func() bool { return pgxleak.Draining(db) })
	close(release)
	require.Error(t, <-connErr, "the checkout whose reset straddled Drain was handed out")
	require.NoError(t, <-drained, "Drain")
	assert.Equal(t, before, stats(t, db).Checkouts, "checkouts recorded during Drain")
}

// TestDrainWaitsForConnectInFlight: a checkout whose Connect began before
// Drain must neither slip past it nor be handed out after it.
func TestDrainWaitsForConnectInFlight(t *testing.T) {
	fc := &testdriver.Connector{Gate: make(chan struct{})}
	db, err := pgxleak.OpenDB(fc, pgxleak.WithLogger(nil))
	require.NoError(t, err)
	connErr := make(chan error, 1)
	go func() {
		c, err := db.Conn(context.Background())
		if err == nil {
			c.Close()
		}
		connErr <- err
	}()
	pgtest.WaitFor(t, 5*time.Second, "Connect to be under way", func() bool { return fc.Attempts.Load() == 1 })
	drained := make(chan error, 1)
	go func() { drained <- pgxleak.Drain(context.Background(), db) }()
	pgtest.WaitFor(t, 5*time.Second, "Drain to start", func() bool { return pgxleak.Draining(db) })
	select {
	case err := <-drained:
		require.FailNowf(t, "Drain returned while a Connect was under way", "Drain = %v", err)
	case <-time.After(20 * time.Millisecond): // Drain polls every 5ms: it had its chances
	}
	close(fc.Gate)
	require.ErrorIs(t, <-connErr, pgxleak.ErrDraining, "the in-flight checkout")
	require.NoError(t, <-drained, "Drain")
}

// TestDrainTwice: a second Drain lists what is still out too.
func TestDrainTwice(t *testing.T) {
	db, _ := openTest(t)
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	defer c.Close()
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		err := pgxleak.Drain(ctx, db)
		cancel()
		var le *pgxleak.LeakError
		require.ErrorAs(t, err, &le, "Drain #%d", i+1)
		require.Len(t, le.Checkouts, 1, "Drain #%d: the connection still out", i+1)
	}
	assert.EqualValues(t, 1, stats(t, db).StillOut, "still-out reports: the connection is reported once")
}

// TestDrainTerminateStillOut: after Drain with TerminateStillOut, the
// leaked transaction's row lock is released, and the report says which
// backend was terminated.
func TestDrainTerminateStillOut(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, dsn := openTest(t, rec.Option())
	pgtest.Exec(t, dsn, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	leak, leakAt := leakLockedTx(t, db)
	defer leak.Rollback() // the terminated connection comes back here, and is discarded

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := pgxleak.Drain(ctx, db, pgxleak.TerminateStillOut())
	var le *pgxleak.LeakError
	require.ErrorAs(t, err, &le, "Drain")
	require.Len(t, le.Checkouts, 1, "Drain")
	out := le.Checkouts[0]
	assert.True(t, out.Terminated, "still out: %q, want it terminated", out.String())
	assert.Equal(t, leakAt.line, out.Culprit.Line, "still out: the leak's culprit")
	assert.Contains(t, out.String(), "; backend terminated")
	assert.Empty(t, le.Notes)
	r := rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut })
	assert.True(t, r.Terminated, "still-out report %q: want it marked terminated", r.String())
	assert.EqualValues(t, 1, stats(t, db).Terminated, "Stats.Terminated")

	// A new transaction on a new connection can lock the row (the server
	// ends the backend asynchronously: NOWAIT until it has).
	c, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	defer c.Close(context.Background())
	pgtest.WaitFor(t, 5*time.Second, "the row lock released", func() bool {
		tx, err := c.Begin(context.Background())
		require.NoError(t, err)
		defer tx.Rollback(context.Background())
		_, err = tx.Exec(context.Background(), "SELECT id FROM t WHERE id = 1 FOR UPDATE NOWAIT")
		return err == nil
	})
}

// TestTerminateDiscardsOnReturn: a connection whose backend was terminated
// is discarded when it comes back, even when nothing used it since (pgx
// has not noticed the closed socket yet).
func TestTerminateDiscardsOnReturn(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(1))
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	require.NoError(t, conn.PingContext(ctx))
	cs := checkouts(t, db)
	require.Len(t, cs, 1)
	require.NotZero(t, cs[0].BackendPID, "the checkout's backend PID")
	pid := cs[0].BackendPID
	assert.ErrorContains(t, pgxleak.Terminate(ctx, db, pid+100000), "not a connection checked out of this pool", "Terminate of a PID not ours")
	require.NoError(t, pgxleak.Terminate(ctx, db, pid), "Terminate")
	require.NoError(t, conn.Close())
	assert.Zero(t, db.Stats().OpenConnections, "connections open after the terminated one came back: it is discarded")
	var got uint32
	require.NoError(t, db.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&got), "the next query (the terminated connection was handed out again?)")
	assert.NotEqual(t, pid, got, "the terminated backend was reused")
	assert.EqualValues(t, 1, stats(t, db).Terminated, "Stats.Terminated")
}
