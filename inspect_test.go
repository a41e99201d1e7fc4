package pgxleak_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

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
	assert.EqualValues(t, 1, pgxleak.Stats(db).StillOut, "still-out reports")
}

func TestCheckoutsFields(t *testing.T) {
	db, _ := openTest(t)
	ctx := context.Background()
	c, err := db.Conn(ctx)
	require.NoError(t, err)
	defer c.Close()
	var pid int
	require.NoError(t, c.QueryRowContext(ctx, "SELECT pg_backend_pid() WHERE $1::text <> ''", "argument-value").Scan(&pid))
	cs := pgxleak.Checkouts(db)
	require.Len(t, cs, 1)
	co := cs[0]
	assert.Equal(t, pid, int(co.BackendPID))
	assert.Equal(t, "idle", co.TxStatus)
	assert.False(t, co.Suspected)
	assert.Positive(t, co.Held)
	assert.GreaterOrEqual(t, time.Since(co.CheckedOutAt), co.Held-time.Millisecond, "Held is at most the time since CheckedOutAt")
	assert.Equal(t, "SELECT pg_backend_pid() WHERE $1::text <> ''", co.LastStatement, "the statement's text")
	assert.NotContains(t, co.String(), "argument-value", "the statement's arguments are not recorded")
	assert.Nil(t, pgxleak.Checkouts(nil))
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
		return pgxleak.Stats(db).GarbageCollected != 0
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
	before := pgxleak.Stats(db).Checkouts
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
	assert.Equal(t, before, pgxleak.Stats(db).Checkouts, "checkouts recorded during Drain")
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
	assert.EqualValues(t, 1, pgxleak.Stats(db).StillOut, "still-out reports: the connection is reported once")
}
