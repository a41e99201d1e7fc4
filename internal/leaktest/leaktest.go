// Package leaktest is the test support that needs pgxleak itself: the one
// leak recorder, the harness that compares the checkout stacks taken with
// frame pointers and with runtime.Callers, tracked pools on a fresh
// PostgreSQL database (Open), a leaked transaction (LeakTx), the line a
// checkout is made at (LineBelow) and TestMain's goroutine check. The root
// package's external tests (package pgxleak_test), the live page's and
// the integration module's use it; the root package's in-package tests
// cannot, since it imports pgxleak.
package leaktest

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/stack"
)

// Recorder collects the leak reports of the pools opened with its Option,
// for a test to wait on and inspect. The zero value is ready to use.
type Recorder struct {
	mu      sync.Mutex
	leaks   []pgxleak.Leak
	changed chan struct{} // closed when a report comes in; nil until Wait needs it
}

// Option is pgxleak.WithOnLeak with r recording every report.
func (r *Recorder) Option() pgxleak.Option {
	return pgxleak.WithOnLeak(func(l pgxleak.Leak) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.leaks = append(r.leaks, l)
		if r.changed != nil {
			close(r.changed)
			r.changed = nil
		}
	})
}

// All returns the reports recorded so far, in order.
func (r *Recorder) All() []pgxleak.Leak {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pgxleak.Leak(nil), r.leaks...)
}

// Has reports whether a report recorded so far matches match.
func (r *Recorder) Has(match func(pgxleak.Leak) bool) bool {
	for _, l := range r.All() {
		if match(l) {
			return true
		}
	}
	return false
}

// Wait returns the first report matching match, and fails t if none came
// within timeout. Call it from the test's goroutine.
func (r *Recorder) Wait(t testing.TB, timeout time.Duration, match func(pgxleak.Leak) bool) pgxleak.Leak {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		r.mu.Lock()
		leaks := append([]pgxleak.Leak(nil), r.leaks...)
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		r.mu.Unlock()
		for _, l := range leaks {
			if match(l) {
				return l
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			require.FailNowf(t, "no matching leak report", "none within %v; got %v", timeout, r.All())
		}
	}
}

// Stats returns pgxleak.Stats(db), failing t if db is not a pgxleak pool.
func Stats(t testing.TB, db *sql.DB) pgxleak.PoolStats {
	t.Helper()
	s, err := pgxleak.Stats(db)
	require.NoError(t, err, "pgxleak.Stats")
	return s
}

// Checkouts returns pgxleak.Checkouts(db), failing t if db is not a
// pgxleak pool.
func Checkouts(t testing.TB, db *sql.DB) []pgxleak.Checkout {
	t.Helper()
	cs, err := pgxleak.Checkouts(db)
	require.NoError(t, err, "pgxleak.Checkouts")
	return cs
}

// StackString renders frames as LeakError and the live page do, like a
// goroutine's stack in a panic.
func StackString(fs []pgxleak.Frame) string {
	out := make([]stack.Frame, len(fs))
	for i, f := range fs {
		out[i] = stack.Frame(f)
	}
	return stack.Format(out)
}
