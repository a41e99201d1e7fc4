package pgxleak_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"sync"
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
	assert.Equal(t, line.Line, le.Checkouts[0].Culprit.Line, "the lost connection's culprit")
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

// TestDrainConnectInFlight: a checkout whose Connect began before Drain
// does not slip past it: Drain need not wait for the server to answer, and
// the connection is refused when it does, never handed out.
func TestDrainConnectInFlight(t *testing.T) {
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
	require.NoError(t, pgxleak.Drain(context.Background(), db), "nothing is out while the server has not answered")
	close(fc.Gate)
	require.ErrorIs(t, <-connErr, pgxleak.ErrDraining)
	assert.Zero(t, stats(t, db).Checkouts)
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

// TestDrainTerminateStillOut: after Drain with WithTerminateStillOut, the
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
	err := pgxleak.Drain(ctx, db, pgxleak.WithTerminateStillOut())
	var le *pgxleak.LeakError
	require.ErrorAs(t, err, &le, "Drain")
	require.Len(t, le.Checkouts, 1, "Drain")
	out := le.Checkouts[0]
	assert.True(t, out.Terminated, "still out: %q, want it terminated", out.String())
	assert.Equal(t, leakAt.Line, out.Culprit.Line, "still out: the leak's culprit")
	assert.Contains(t, out.String(), "; backend terminated")
	// Terminated at once if its goroutine was seen to have exited, else
	// at the deadline: the note names it, its line and why either way.
	require.Len(t, le.Notes, 1)
	assert.Regexp(t, fmt.Sprintf(`^terminated backend PID %d \(checked out at %s\): (the goroutine that took it has exited|still out when the wait ended \(context deadline exceeded\))$`,
		le.Checkouts[0].BackendPID, regexp.QuoteMeta(leakAt.Short())), le.Notes[0])
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

// loadPool runs 40 goroutines on db until stop closes: half run queries,
// half take a db.Conn, run a query on it and close it. Errors (the pool
// draining or closed) are expected and ignored. It returns once every
// goroutine has run at least once.
func loadPool(t *testing.T, db *sql.DB, stop <-chan struct{}) *sync.WaitGroup {
	t.Helper()
	var wg sync.WaitGroup
	var started sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			first := true
			for {
				if i%2 == 0 {
					var n int
					_ = db.QueryRowContext(ctx, "SELECT 1").Scan(&n)
				} else if c, err := db.Conn(ctx); err == nil {
					_, _ = c.ExecContext(ctx, "SELECT 1")
					_ = c.Close()
				}
				if first {
					started.Done()
					first = false
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	started.Wait()
	return &wg
}

// TestDrainUnderLoad: Drain under load returns nil once every checkout has
// come back, never an error that names nothing; with a real leak, the
// error lists it (and nothing it cannot name).
func TestDrainUnderLoad(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	for _, leak := range []bool{false, true} {
		for round := range 15 {
			db, err := pgxleak.Open("pgx", dsn, pgxleak.WithLogger(quiet), pgxleak.WithMaxOpenConns(10))
			require.NoError(t, err)
			var leaked *sql.Conn
			var at site
			if leak {
				leakOnPurpose(func() {
					at = lineBelow()
					leaked, err = db.Conn(context.Background())
				})
				require.NoError(t, err)
				_, err = leaked.ExecContext(context.Background(), "SELECT 1")
				require.NoError(t, err)
			}
			stop := make(chan struct{})
			wg := loadPool(t, db, stop)
			deadline := 5 * time.Second
			if leak {
				deadline = time.Second // the leak never comes back
			}
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			err = pgxleak.Drain(ctx, db)
			cancel()
			close(stop)
			wg.Wait()
			if !leak {
				require.NoError(t, err, "round %d: every checkout came back", round)
			} else {
				var le *pgxleak.LeakError
				require.ErrorAs(t, err, &le, "round %d", round)
				// The leak is listed. A starved worker's checkout may still
				// be out at the deadline too: then it is listed, with its
				// line, never counted without one.
				leaks := 0
				for _, c := range le.Checkouts {
					switch {
					case c.Culprit.Line == at.Line:
						leaks++
					case c.Unseen:
						assert.NotZero(t, c.BackendPID, "round %d: %v", round, err)
					default:
						assert.Equal(t, "github.com/pgxleak/pgxleak_test.loadPool.func1", c.Culprit.Function, "round %d: %v", round, err)
					}
				}
				assert.Equal(t, 1, leaks, "round %d: %v", round, err)
				assert.Zero(t, le.Unlisted, "round %d: %v", round, err)
				require.NoError(t, leaked.Close())
			}
			_ = db.Close()
		}
	}
}

// TestDrainTerminatesTheCauseNotTheVictim: goroutine A updates a row in a
// transaction and exits without ending it; B's UPDATE of the same row
// waits for A's lock. Drain with WithTerminateStillOut terminates A at once,
// with its reasons, and B's UPDATE succeeds, every time; Drain then need
// not wait for its deadline.
func TestDrainTerminatesTheCauseNotTheVictim(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	pgtest.Exec(t, dsn, "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0)")
	for run := range 20 {
		db, err := pgxleak.Open("pgx", dsn, pgxleak.WithLogger(quiet))
		require.NoError(t, err)
		tx, at := forgetLockedTx(t, db)
		pgtest.WaitFor(t, 5*time.Second, "A's goroutine to exit", func() bool {
			buf := make([]byte, 1<<20) // A's goroutine: leaktest.LeakTx.func1, or caller.LeakTx.func1 if inlined
			return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "LeakTx.func1")
		})
		victim := make(chan error, 1)
		victimAt := lineBelow()
		go func() { _, err := db.Exec("UPDATE t SET v = v + 1 WHERE id = 1"); victim <- err }()
		pgtest.WaitFor(t, 5*time.Second, "B to wait for A's lock", func() bool { return lockWaiters(t, dsn) == 1 })
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = pgxleak.Drain(ctx, db, pgxleak.WithTerminateStillOut())
		cancel()
		require.NoError(t, <-victim, "run %d: the victim's UPDATE", run)
		var le *pgxleak.LeakError
		require.ErrorAs(t, err, &le, "run %d", run)
		assert.NotErrorIs(t, err, context.DeadlineExceeded, "run %d: Drain waited for a terminated connection", run)
		require.Len(t, le.Checkouts, 1, "run %d: %v", run, err)
		c := le.Checkouts[0]
		assert.True(t, c.Terminated, "run %d", run)
		assert.Equal(t, at.Line, c.Culprit.Line, "run %d", run)
		require.Len(t, le.Notes, 1, "run %d: %v", run, err)
		assert.Regexp(t, fmt.Sprintf(`^terminated backend PID %d \(checked out at %s\): the goroutine that took it has exited; idle in transaction, holding locks that block PID \d+ \(checked out at %s\)$`,
			c.BackendPID, regexp.QuoteMeta(at.Short()), regexp.QuoteMeta(victimAt.Short())), le.Notes[0], "run %d", run)
		require.Error(t, tx.Rollback(), "run %d: A's backend was terminated", run)
	}
}

// forgetLockedTx updates row 1 of t in a transaction on a goroutine that
// exits without ending it (leakTx).
func forgetLockedTx(t *testing.T, db *sql.DB) (*sql.Tx, site) {
	t.Helper()
	return leakTx(t, db, "UPDATE t SET v = v + 1 WHERE id = 1")
}

// lockWaiters counts the backends of dsn's database waiting on a lock.
func lockWaiters(t *testing.T, dsn string) int {
	t.Helper()
	c, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	defer c.Close(context.Background())
	var n int
	require.NoError(t, c.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'").Scan(&n))
	return n
}
