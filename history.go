package pgxleak

import (
	"sync"
	"time"
)

// historySpan is how far back the live page's plots reach.
const historySpan = 15 * time.Minute

// maxHistory caps the samples kept per pool, whatever the sampling
// interval: 900 covers 15 minutes at the default interval of one second,
// and costs about 100 KB per pool. A shorter interval covers less time.
const maxHistory = 900

// Sample is one point of a pool's history, taken by the pool's monitor at
// every wait-sampling interval ([WithWaitSampleInterval]). Counts "in the
// interval" are since the previous sample; the leak counts are totals since
// the pool opened.
type Sample struct {
	At        time.Time     `json:"at"`
	Interval  time.Duration `json:"interval_ns"` // since the previous sample
	InUse     int           `json:"in_use"`      // connections in use (database/sql's count, warm-ups included)
	Idle      int           `json:"idle"`        // idle connections
	MaxOpen   int           `json:"max_open"`    // the pool's limit; 0 means unlimited
	Waits     int64         `json:"waits"`       // waits for a connection that started in the interval
	WaitTime  time.Duration `json:"wait_ns"`     // wait time of the waits that ended in the interval
	Checkouts uint64        `json:"checkouts"`   // user checkouts in the interval

	Suspected        uint64 `json:"suspected"`         // suspected leaks reported, total
	GarbageCollected uint64 `json:"garbage_collected"` // Rows garbage-collected without Close, total
	StillOut         uint64 `json:"still_out"`         // still out at Drain or Close, total
	Deadlocks        uint64 `json:"deadlocks"`         // deadlocks reported, total
}

// history is a pool's ring of samples, written by the monitor goroutine
// and read by the live page. The zero value is ready. The ring grows with
// the samples, by append, up to historyLen for the sampling interval, and
// then wraps: a pool that lives a minute never holds 15 minutes' worth.
type history struct {
	mu      sync.Mutex
	ring    []Sample // guarded by mu
	next    int      // guarded by mu; where the next sample goes once full
	full    bool     // guarded by mu; the ring has reached its length
	last    Sample   // monitor only: the previous cumulative counters
	lastSet bool     // monitor only
}

// historyLen is the number of samples that cover historySpan at interval,
// at most maxHistory.
func historyLen(interval time.Duration) int {
	if interval <= 0 {
		return maxHistory
	}
	n := int((historySpan + interval - 1) / interval)
	return min(max(n, 2), maxHistory)
}

// add appends s, overwriting the oldest sample once the ring is full.
func (h *history) add(s Sample, interval time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.full {
		h.ring = append(h.ring, s)
		h.full = len(h.ring) >= historyLen(interval)
		return
	}
	h.ring[h.next] = s
	h.next = (h.next + 1) % len(h.ring)
}

// samples returns the samples, oldest first.
func (h *history) samples() []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.full {
		return append([]Sample(nil), h.ring...)
	}
	out := make([]Sample, 0, len(h.ring))
	out = append(out, h.ring[h.next:]...)
	return append(out, h.ring[:h.next]...)
}

// sampleHistory records one sample of the pool. The monitor calls it at
// every wait-sampling tick, after the wait sampler; it reads db.Stats()
// and the tracker's counters (one lock round per connection), never on the
// hot path.
func (p *pool) sampleHistory() {
	if p.db == nil {
		return
	}
	now := time.Now()
	var st PoolStats
	st.DBStats = p.db.Stats()
	p.fillStats(&st)
	cur := Sample{
		At:               now,
		InUse:            st.InUse,
		Idle:             st.Idle,
		MaxOpen:          st.MaxOpenConnections,
		Waits:            st.WaitCount,
		WaitTime:         st.WaitDuration,
		Checkouts:        st.Checkouts,
		Suspected:        st.Suspected,
		GarbageCollected: st.GarbageCollected,
		StillOut:         st.StillOut,
		Deadlocks:        p.monitor.recent.count("deadlock"),
	}
	h := &p.history
	prev := h.last
	h.last = cur
	if !h.lastSet {
		// The first tick comes one interval after the pool opened: its
		// counts are everything since then.
		h.lastSet = true
		prev = Sample{At: now.Add(-p.cfg.waitInterval)}
	}
	s := cur
	s.Interval = now.Sub(prev.At)
	s.Waits = cur.Waits - prev.Waits
	s.WaitTime = cur.WaitTime - prev.WaitTime
	if cur.Checkouts > prev.Checkouts {
		s.Checkouts = cur.Checkouts - prev.Checkouts
	} else {
		s.Checkouts = 0
	}
	h.add(s, p.cfg.waitInterval)
}
