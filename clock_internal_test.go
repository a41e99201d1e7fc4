package pgxleak

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak/internal/pgtest"
)

func TestCoarseResolution(t *testing.T) {
	for _, tc := range []struct{ threshold, want time.Duration }{
		{0, 10 * time.Millisecond},
		{defaultLeakThreshold, 10 * time.Millisecond},
		{320 * time.Millisecond, 5 * time.Millisecond},
		{10 * time.Millisecond, time.Millisecond},
	} {
		assert.Equal(t, tc.want, coarseResolution(tc.threshold), "coarseResolution(%v)", tc.threshold)
	}
}

// TestCoarseClockNeverAhead: the coarse clock is a past reading of the
// system clock, so Held is never understated. (It may go back by the time
// between the ticker's reading and its store, when it wakes from parked
// while a reader read the system clock.)
func TestCoarseClockNeverAhead(t *testing.T) {
	k := newCoarseClock(time.Now(), time.Millisecond)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); k.run(stop) }()
	defer func() { close(stop); <-done }()
	for range 100_000 {
		now := k.now()
		if precise := k.precise(); now > precise { // no require call per read: the loop races the ticker
			require.FailNowf(t, "coarse clock ahead", "coarse clock %d ahead of the system clock %d", now, precise)
		}
	}
}

// TestCoarseClockParksAndWakes: unread, the clock stops ticking; the next
// read gets the system clock's time and wakes it.
func TestCoarseClockParksAndWakes(t *testing.T) {
	k := newCoarseClock(time.Now(), time.Millisecond)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); k.run(stop) }()
	defer func() { close(stop); <-done }()
	pgtest.WaitFor(t, 5*time.Second, "the clock to tick", func() bool { return k.v.Load() != 0 })
	pgtest.WaitFor(t, 5*time.Second, "the unread clock to park", func() bool { return k.v.Load() == 0 })
	before := k.precise()
	require.GreaterOrEqual(t, k.now(), before, "a read of the parked clock is fresh")
	pgtest.WaitFor(t, 5*time.Second, "the read to wake the clock", func() bool { return k.v.Load() != 0 })
}

// TestCoarseClockStopsWithThePool: the ticker is one of the pool's
// background goroutines, and Close waits for it (the root TestMain checks
// that no goroutine is left).
func TestCoarseClockStopsWithThePool(t *testing.T) {
	cfg, err := newConfig(nil)
	require.NoError(t, err)
	p := newPool(cfg, "clock")
	p.start()
	pgtest.WaitFor(t, 5*time.Second, "the clock to tick", func() bool { return p.tracker.clock.v.Load() != 0 })
	p.close()
}
