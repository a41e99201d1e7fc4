package pgxleak_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgxleak/pgxleak"
)

func TestLeakConnNeverClosed(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.option())
	line := lineBelow()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	l := rec.wait(t, 5*time.Second, suspectedAt(line))
	if l.Held < threshold || !strings.HasPrefix(l.Checkout.String(), fmt.Sprintf("connection checked out at %s (pgxleak_test.TestLeakConnNeverClosed)", line.short())) {
		t.Fatalf("report: %s (held %v)", l.Checkout, l.Held)
	}
	if l.BackendPID == 0 || l.Pool == "" || l.TxStatus != "idle" || len(l.Stack) == 0 {
		t.Fatalf("report lacks fields: %+v", l)
	}
	if err := pgxleak.Find(db, pgxleak.GracePeriod(0)); err == nil || !strings.Contains(err.Error(), line.String()) {
		t.Fatalf("Find = %v, want the culprit line", err)
	}
	c.Close()
	r := rec.wait(t, 5*time.Second, resolvedAt(line))
	if r.Held < l.Held {
		t.Fatalf("resolved after %v, but it was already held %v", r.Held, l.Held)
	}
	pgxleak.VerifyNone(t, db)
	if st := stats(t, db); st.Suspected != 1 || st.Resolved != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestNoFalsePositives: many goroutines running short queries on a small
// pool never look like leaks, and every checkout is matched by a return.
// PGXLEAK_FULL=1 runs the full 2 million queries.
func TestNoFalsePositives(t *testing.T) {
	const goroutines = 200
	perG := 100 // 20,000 queries
	if os.Getenv("PGXLEAK_FULL") == "1" {
		perG = 10_000 // 2,000,000 queries
	}
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(5), pgxleak.WithLeakThreshold(time.Second), rec.option())
	var failed atomic.Int64
	var longest atomic.Int64 // the longest query, in ns: no checkout of it was held longer
	start := time.Now()
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range perG {
				var n int
				began := time.Now()
				if err := db.QueryRow("SELECT 1").Scan(&n); err != nil {
					failed.Add(1)
				}
				for d, m := int64(time.Since(began)), longest.Load(); d > m && !longest.CompareAndSwap(m, d); m = longest.Load() {
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	total := goroutines * perG
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d queries failed", f, total)
	}
	// On a loaded machine a query can really hold its connection past the
	// 1s threshold (a goroutine starved of CPU): that report is true. A
	// false one claims a hold no query had.
	for _, l := range rec.all() {
		held := l.Held
		if !l.SeenAt.IsZero() {
			held -= l.SeenAt.Sub(l.CheckedOutAt) // the bound of a checkout seen late
		}
		if l.Kind != pgxleak.LeakSuspected || held > time.Duration(longest.Load()) {
			t.Fatalf("false report (longest query %v): %v", time.Duration(longest.Load()), l)
		}
	}
	st := stats(t, db)
	if st.Checkouts != st.Returns || st.CheckedOut != 0 || st.Checkouts < uint64(total) {
		t.Fatalf("unbalanced after %d queries: %+v", total, st)
	}
	t.Logf("%d queries in %v (%.0f/s); %d checkouts, %d returns, %d waits",
		total, elapsed, float64(total)/elapsed.Seconds(), st.Checkouts, st.Returns, st.WaitCount)
}
