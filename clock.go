package pgxleak

import (
	"sync/atomic"
	"time"
)

// coarseClock is the pool time at a resolution of res, read with one
// atomic load: the checkout and the return must not read the system clock,
// which costs as much as the rest of a checkout on some virtual machines.
// A goroutine of its own refreshes it every res while the pool is open, and
// parks after parkAfter ticks nobody read; the next reader then reads the
// system clock once and wakes it.
//
// The value it returns is a reading of the system clock taken at the last
// tick, so it is never later than the time, and earlier by at most res
// plus however late the ticking goroutine was scheduled. (Waking from
// parked, it may step back behind a reader's system clock reading by the
// time between the ticker's reading and its store.)
type coarseClock struct {
	epoch time.Time
	res   time.Duration

	// v is 0 while parked; otherwise the pool time of the last tick,
	// shifted left by one, with the low bit set until someone reads it.
	// The first reader after a tick clears the bit: one write per tick,
	// not per read, on this shared cache line.
	v    atomic.Int64
	wake chan struct{}
}

// parkAfter is how many ticks in a row nobody read before the clock parks:
// a pool without checkouts costs no wake-ups, and one checkout after a
// pause pays a system clock read and a channel send.
const parkAfter = 8

// coarseResolution is the resolution of the clock for a leak threshold: a
// small fraction of the threshold, so that leak reports come no more than
// that much early, and at most 10ms, so that CheckedOutAt and Held are good
// to a hundredth of a second, but at least 1ms: a faster ticker costs more
// CPU than the clock reads it saves.
func coarseResolution(threshold time.Duration) time.Duration {
	if threshold <= 0 {
		return 10 * time.Millisecond
	}
	return min(max(threshold/64, time.Millisecond), 10*time.Millisecond)
}

func newCoarseClock(epoch time.Time, res time.Duration) *coarseClock {
	return &coarseClock{epoch: epoch, res: res, wake: make(chan struct{}, 1)}
}

// precise reads the system clock, as pool time. It is never 0, the parked
// value, since the pool opened before it.
func (k *coarseClock) precise() int64 { return max(int64(time.Since(k.epoch)), 1) }

// now returns the pool time at the clock's resolution.
func (k *coarseClock) now() int64 {
	v := k.v.Load()
	switch {
	case v == 0: // parked
		select {
		case k.wake <- struct{}{}:
		default:
		}
		return k.precise()
	case v&1 != 0: // first read since the tick; losing the race to another reader or a tick is fine
		k.v.CompareAndSwap(v, v&^1)
	}
	return v >> 1
}

// run ticks until stop is closed.
func (k *coarseClock) run(stop <-chan struct{}) {
	k.v.Store(k.precise()<<1 | 1)
	tk := time.NewTicker(k.res)
	defer tk.Stop()
	unread := 0
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
		}
		if k.v.Swap(k.precise()<<1|1)&1 == 0 {
			unread = 0
			continue
		}
		if unread++; unread < parkAfter {
			continue
		}
		k.v.Store(0)
		tk.Stop()
		select {
		case <-stop:
			return
		case <-k.wake:
		}
		k.v.Store(k.precise()<<1 | 1)
		tk.Reset(k.res)
		unread = 0
	}
}
