package livepage

import (
	"runtime"
	"testing"
	"time"
	"weak"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

func TestHistoryLen(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		want     int
	}{
		{time.Second, 900},           // the default: 15 minutes exactly
		{2 * time.Second, 450},       // longer intervals: fewer points, same span
		{7 * time.Second, 129},       // rounded up
		{10 * time.Millisecond, 900}, // capped: covers 9 s only
		{time.Hour, 2},
		{0, 900},
	} {
		assert.Equal(t, tc.want, historyLen(tc.interval), "historyLen(%v)", tc.interval)
	}
}

func TestHistoryRing(t *testing.T) {
	var h history
	require.Empty(t, h.samples(), "the zero history")
	n := historyLen(5 * time.Minute) // 3
	for i := range n + 2 {
		h.add(Sample{Waits: int64(i)}, 5*time.Minute)
		got := h.samples()
		require.Len(t, got, min(i+1, n), "after %d adds", i+1)
		for j, s := range got { // oldest first, the newest last
			require.Equal(t, int64(i-len(got)+1+j), s.Waits, "after %d adds: sample %d", i+1, j)
		}
	}
	require.Len(t, h.ring, n, "the ring grew")
}

// TestSamplerLifecycle: a sampler samples its pool's Stats at the pool's
// interval, stops when the pool closes, and then keeps nothing of it.
func TestSamplerLifecycle(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithoutServerView())
	require.NoError(t, err)
	s := newSampler(db)
	s.setInterval(5 * time.Millisecond)
	_, err = db.ExecContext(t.Context(), "SELECT 1")
	require.NoError(t, err)
	pgtest.WaitFor(t, 10*time.Second, "3 samples, one checkout among them", func() bool {
		var n uint64
		for _, x := range s.samples() {
			n += x.Checkouts
		}
		return len(s.samples()) >= 3 && n >= 1
	})
	require.NoError(t, db.Close())
	select {
	case <-s.state.done:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the sampler still runs after its pool closed")
	}

	// Closed and dropped: nothing of the page keeps the pool reachable.
	w := weak.Make(db)
	db, s = nil, nil
	pgtest.WaitFor(t, 10*time.Second, "the closed pool collected", func() bool {
		runtime.GC()
		return w.Value() == nil
	})
}
