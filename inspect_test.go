package pgxleak_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

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
		t.Fatalf("Drain returned %v while a connection was out", err)
	default:
	}
	_, err = c.ExecContext(context.Background(), "SELECT 1")
	require.NoError(t, err, "a connection already out must keep working during drain")
	c.Close()
	require.NoError(t, <-drained, "Drain =")
	if err := db.Ping(); err == nil {
		t.Fatal("the pool is still open after Drain")
	}
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
	if !errors.As(err, &le) || len(le.Checkouts) != 1 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain = %v, want a LeakError with one checkout and the deadline", err)
	}
	if !strings.Contains(err.Error(), line.String()) {
		t.Fatalf("Drain error does not name the culprit line %s: %v", line, err)
	}
	rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut && isCulprit(line)(l) })
	if st := pgxleak.Stats(db); st.StillOut != 1 {
		t.Fatalf("stats %+v", st)
	}
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
	if len(cs) != 1 {
		t.Fatalf("Checkouts = %v", cs)
	}
	co := cs[0]
	if int(co.BackendPID) != pid || co.TxStatus != "idle" || co.Suspected || co.Held <= 0 || time.Since(co.CheckedOutAt) < co.Held-time.Millisecond {
		t.Fatalf("checkout %+v (pid %d)", co, pid)
	}
	if co.LastStatement != "SELECT pg_backend_pid() WHERE $1::text <> ''" || strings.Contains(co.String(), "argument-value") {
		t.Fatalf("statement %q: want the text without arguments", co.LastStatement)
	}
	if pgxleak.Checkouts(nil) != nil {
		t.Fatal("Checkouts(nil) should be nil")
	}
}

// TestDrainDoesNotWaitForGarbageCollectedLeaks: a connection whose Rows
// was garbage-collected never comes back, so Drain reports it at once
// instead of waiting for ctx.
func TestDrainDoesNotWaitForGarbageCollectedLeaks(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, rec.Option())
	line := leakRows(t, db)
	deadline := time.Now().Add(10 * time.Second)
	for pgxleak.Stats(db).GarbageCollected == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no garbage-collection report")
		}
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := pgxleak.Drain(ctx, db)
	var le *pgxleak.LeakError
	if !errors.As(err, &le) || errors.Is(err, context.DeadlineExceeded) || len(le.Checkouts) != 1 || le.Checkouts[0].Culprit.Line != line.line {
		t.Fatalf("Drain = %v; want the lost connection listed at once", err)
	}
}

// TestDrainResetInFlight: a checkout of an idle connection whose session
// reset is under way when Drain starts must not be handed out once Drain
// has looked: ResetSession checks for draining under the connection's
// lock, which Drain takes for every connection.
func TestDrainResetInFlight(t *testing.T) {
	fc := &testdriver.Connector{}
	db, err := pgxleak.OpenDB(fc, pgxleak.WithMaxOpenConns(1), pgxleak.WithLogger(nil))
	require.NoError(t, err)
	if err := db.Ping(); err != nil { // opens the connection and returns it
		t.Fatal(err)
	}
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
	if err := <-connErr; err == nil {
		t.Fatal("the checkout whose reset straddled Drain was handed out")
	}
	require.NoError(t, <-drained, "Drain =")
	if got := pgxleak.Stats(db).Checkouts; got != before {
		t.Fatalf("%d checkouts recorded during Drain, want none", got-before)
	}
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
		t.Fatalf("Drain returned %v while a Connect was under way", err)
	case <-time.After(20 * time.Millisecond): // Drain polls every 5ms: it had its chances
	}
	close(fc.Gate)
	if err := <-connErr; !errors.Is(err, pgxleak.ErrDraining) {
		t.Fatalf("the in-flight checkout got %v, want ErrDraining", err)
	}
	require.NoError(t, <-drained, "Drain =")
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
		if !errors.As(err, &le) || len(le.Checkouts) != 1 {
			t.Fatalf("Drain #%d = %v, want the connection still out", i+1, err)
		}
	}
	if st := pgxleak.Stats(db); st.StillOut != 1 {
		t.Fatalf("stats %+v: reported once", st)
	}
}
