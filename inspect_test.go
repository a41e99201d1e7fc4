package pgxleak_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

func TestDrainWaitsForReturns(t *testing.T) {
	db, _ := openTest(t)
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
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
	if _, err := c.ExecContext(context.Background(), "SELECT 1"); err != nil {
		t.Fatalf("a connection already out must keep working during drain: %v", err)
	}
	c.Close()
	if err := <-drained; err != nil {
		t.Fatalf("Drain = %v", err)
	}
	if err := db.Ping(); err == nil {
		t.Fatal("the pool is still open after Drain")
	}
}

func TestDrainReportsLeftovers(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, rec.option())
	line := lineBelow()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
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
	rec.wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut && isCulprit(line)(l) })
	if st := pgxleak.Stats(db); st.StillOut != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCheckoutsFields(t *testing.T) {
	db, _ := openTest(t)
	ctx := context.Background()
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var pid int
	if err := c.QueryRowContext(ctx, "SELECT pg_backend_pid() WHERE $1::text <> ''", "argument-value").Scan(&pid); err != nil {
		t.Fatal(err)
	}
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
	rec := newLeakRecorder()
	db, _ := openTest(t, rec.option())
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
