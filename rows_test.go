package pgxleak_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/pgxleak/pgxleak"
)

func TestLeakRowsNeverClosedThresholdAndGC(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.option())
	line := leakRows(t, db)
	rec.wait(t, 5*time.Second, suspectedAt(line))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !hasLeak(rec, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakGarbageCollected && isCulprit(line)(l) }) {
		runtime.GC()
		select {
		case <-rec.added:
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("no garbage-collection report; got %v", rec.all())
		}
	}
	st := stats(t, db)
	if st.GarbageCollected != 1 || st.CheckedOut != 1 || st.DBStats.InUse != 1 {
		t.Fatalf("stats %+v: the connection is lost for good, and counted once", st)
	}
}

func TestLeakQueryRowNeverScanned(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.option())
	line := leakQueryRow(db)
	rec.wait(t, 5*time.Second, suspectedAt(line))
	if n := len(checkouts(t, db)); n != 1 {
		t.Fatalf("%d checkouts, want the unscanned row's connection", n)
	}
}

// TestLeakRowsCancellableResolved: rows on a cancellable context are
// reported as suspected, then as resolved when database/sql closes them
// because the context ended.
func TestLeakRowsCancellableResolved(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.option())
	ctx, cancel := context.WithCancel(context.Background())
	line := lineBelow()
	rows, err := db.QueryContext(ctx, "SELECT generate_series(1, 3)")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	rec.wait(t, 5*time.Second, suspectedAt(line))
	cancel()
	r := rec.wait(t, 5*time.Second, resolvedAt(line))
	if r.Held < threshold {
		t.Fatalf("held %v", r.Held)
	}
	pgxleak.VerifyNone(t, db)
}
