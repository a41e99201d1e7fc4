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

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
)

func TestLeakConnNeverClosed(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.Option())
	line := lineBelow()
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	l := rec.Wait(t, 5*time.Second, suspectedAt(line))
	require.GreaterOrEqual(t, l.Held, threshold, "reported before the threshold")
	require.True(t, strings.HasPrefix(l.Checkout.String(), fmt.Sprintf("connection checked out at %s (pgxleak_test.TestLeakConnNeverClosed)", line.Short())),
		"report: %s", l.Checkout)
	require.NotZero(t, l.BackendPID, "the report's backend: %+v", l)
	require.NotEmpty(t, l.Pool, "the report's pool: %+v", l)
	require.Equal(t, "idle", l.TxStatus, "the report's transaction status")
	require.NotEmpty(t, l.Stack, "the report's stack")
	require.ErrorContains(t, pgxleak.Find(db, pgxleak.WithGracePeriod(0)), line.String(), "Find names the culprit line")
	c.Close()
	r := rec.Wait(t, 5*time.Second, resolvedAt(line))
	require.GreaterOrEqual(t, r.Held, l.Held, "resolved after less time than it was already held")
	pgxleak.VerifyNone(t, db)
	st := stats(t, db)
	assert.EqualValues(t, 1, st.Suspected, "suspected leaks")
	assert.EqualValues(t, 1, st.Resolved, "resolved leaks")
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
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(5), pgxleak.WithLeakThreshold(time.Second), rec.Option())
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
	require.Zero(t, failed.Load(), "queries failed of %d", total)
	// On a loaded machine a query can really hold its connection past the
	// 1s threshold (a goroutine starved of CPU): that report is true. A
	// false one claims a hold no query had.
	for _, l := range rec.All() {
		held := l.Held
		if !l.SeenAt.IsZero() {
			held -= l.SeenAt.Sub(l.CheckedOutAt) // the bound of a checkout seen late
		}
		require.True(t, l.Kind == pgxleak.LeakSuspected && held <= time.Duration(longest.Load()),
			"false report (longest query %v): %v", time.Duration(longest.Load()), l)
	}
	st := stats(t, db)
	assert.Equal(t, st.Checkouts, st.Returns, "unbalanced after %d queries", total)
	assert.Zero(t, st.CheckedOut, "unbalanced after %d queries", total)
	assert.GreaterOrEqual(t, st.Checkouts, uint64(total), "a checkout per query at least")
	t.Logf("%d queries in %v (%.0f/s); %d checkouts, %d returns, %d waits",
		total, elapsed, float64(total)/elapsed.Seconds(), st.Checkouts, st.Returns, st.WaitCount)
}
