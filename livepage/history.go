package livepage

import (
	"database/sql"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/pgxleak/pgxleak"
)

// historySpan is how far back the live page's plots reach.
const historySpan = 15 * time.Minute

// maxHistory caps the samples kept per pool, whatever the sampling
// interval: 900 covers 15 minutes at the default interval of one second,
// and costs about 100 KB per pool. A shorter interval covers less time.
const maxHistory = 900

// Sample is one point of a pool's history, sampled from [pgxleak.Stats] at
// the pool's wait-sampling interval ([pgxleak.WithWaitSampleInterval]). Counts "in the
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
	// Waiting and LongestWait are the waits in progress at the sample
	// ([pgxleak.PoolStats].Waiting, LongestWait): WaitTime counts a wait
	// only once it ends.
	Waiting     int           `json:"waiting"`
	LongestWait time.Duration `json:"longest_wait_ns"`

	Suspected        uint64 `json:"suspected"`         // suspected leaks reported, total
	GarbageCollected uint64 `json:"garbage_collected"` // Rows garbage-collected without Close, total
	StillOut         uint64 `json:"still_out"`         // still out at Drain or Close, total
	Deadlocks        uint64 `json:"deadlocks"`         // deadlocks reported, total
}

// history is a pool's ring of samples, written by its sampler and read by
// the page. The zero value is ready. The ring grows with
// the samples, by append, up to historyLen for the sampling interval, and
// then wraps: a pool that lives a minute never holds 15 minutes' worth.
type history struct {
	mu      sync.Mutex
	ring    []Sample // guarded by mu
	next    int      // guarded by mu; where the next sample goes once full
	full    bool     // guarded by mu; the ring has reached its length
	last    Sample   // sampler only: the previous cumulative counters
	lastSet bool     // sampler only
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

// sampler samples one pool's public counters into its history, from the
// moment Handler is given the pool until the pool closes. Its goroutine
// holds the *sql.DB only weakly, between samples, and never the sampler
// (which holds the pool for the handler's inspections): it keeps no pool
// reachable, and stops at the first sample after the pool closed or was
// collected: within one sampling interval of the pool's Close.
type sampler struct {
	db    *sql.DB
	state *sampling // shared with the goroutine
}

// sampling is what the sampler's goroutine shares with the page.
type sampling struct {
	interval atomic.Int64  // the pool's wait-sampling interval, once an inspection told it
	done     chan struct{} // closed when the goroutine returns
	history  history
}

// defaultInterval is pgxleak's default wait-sampling interval, used until
// the first inspection gives the pool's own.
const defaultInterval = time.Second

func newSampler(db *sql.DB) *sampler {
	st := &sampling{done: make(chan struct{})}
	st.interval.Store(int64(defaultInterval))
	if _, err := pgxleak.Stats(db); err == nil { // nothing to sample otherwise
		go st.run(weak.Make(db))
	} else {
		close(st.done)
	}
	return &sampler{db: db, state: st}
}

// run samples until the pool is closed or collected.
func (st *sampling) run(db weak.Pointer[sql.DB]) {
	defer close(st.done)
	for {
		d := time.Duration(st.interval.Load())
		time.Sleep(d)
		stats, ok := statsOf(db)
		if !ok {
			return
		}
		st.history.sample(stats, time.Now(), d)
	}
}

// statsOf returns the pool's counters, or false once it is closed or
// collected. The pool is held strongly only inside this call.
func statsOf(db weak.Pointer[sql.DB]) (pgxleak.PoolStats, bool) {
	strong := db.Value()
	if strong == nil {
		return pgxleak.PoolStats{}, false
	}
	st, err := pgxleak.Stats(strong)
	return st, err == nil && !st.Closed
}

// setInterval records the pool's wait-sampling interval.
func (s *sampler) setInterval(d time.Duration) {
	if d > 0 {
		s.state.interval.Store(int64(d))
	}
}

// samples returns the history, oldest first.
func (s *sampler) samples() []Sample { return s.state.history.samples() }

// sample records one sample of the pool's counters st, taken at now, at
// the sampling interval.
func (h *history) sample(st pgxleak.PoolStats, now time.Time, interval time.Duration) {
	cur := Sample{
		At:               now,
		InUse:            st.InUse,
		Idle:             st.Idle,
		MaxOpen:          st.MaxOpenConnections,
		Waits:            st.WaitCount,
		WaitTime:         st.WaitDuration,
		Checkouts:        st.Checkouts,
		Waiting:          st.Waiting,
		LongestWait:      st.LongestWait,
		Suspected:        st.Suspected,
		GarbageCollected: st.GarbageCollected,
		StillOut:         st.StillOut,
		Deadlocks:        st.Deadlocks,
	}
	prev := h.last
	h.last = cur
	if !h.lastSet {
		// The first sample comes one interval after sampling began: its
		// counts are everything since the pool opened.
		h.lastSet = true
		prev = Sample{At: now.Add(-interval)}
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
	h.add(s, interval)
}
