package pgxleak

import (
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// PoolStats is pgxleak's counters next to database/sql's.
type PoolStats struct {
	sql.DBStats
	Checkouts        uint64 `json:"checkouts"`         // checkouts seen by the tracker (the pool's own warm-ups excluded)
	Returns          uint64 `json:"returns"`           // returns matched to a checkout
	CheckedOut       int    `json:"checked_out"`       // checked out now by users, by the tracker's count (DBStats.InUse also counts the pool's own warm-ups)
	Suspected        uint64 `json:"suspected"`         // suspected leaks reported
	Resolved         uint64 `json:"resolved"`          // suspected leaks that came back
	GarbageCollected uint64 `json:"garbage_collected"` // Rows garbage-collected without Close
	StillOut         uint64 `json:"still_out"`         // connections still out at Drain or Close
	// LifetimeDiscarded counts connections pgxleak discarded at their
	// jittered end of life (within the last tenth of WithConnMaxLifetime), before
	// database/sql's lifetime; DBStats.MaxLifetimeClosed counts those
	// database/sql closed at the full lifetime.
	LifetimeDiscarded uint64 `json:"lifetime_discarded"`
	// Terminated counts backends ended by Terminate or Drain's
	// WithTerminateStillOut. database/sql still counts each as open (in
	// DBStats.InUse and OpenConnections) until its holder gives it back:
	// terminating frees the server and its locks, not the pool's slot.
	Terminated uint64 `json:"terminated"`
	// Unseen counts connections database/sql has in use (DBStats.InUse)
	// that no driver call has shown the tracker yet: handed out by its
	// background opener. Each is also listed by Checkouts, with Unseen set.
	Unseen int `json:"unseen"`
	// Deadlocks counts connections reported held by a goroutine that waits
	// for another of the same pool.
	Deadlocks uint64 `json:"deadlocks"`
	// Waiting counts the goroutines waiting for a connection now, and
	// LongestWait is how long the longest of them has waited, at least:
	// the waits in progress, which DBStats.WaitDuration counts only once
	// they end. The wait sampler reads them from its goroutine dumps
	// (WithWaitSampleInterval, and at most one dump a second) while
	// callers may be waiting: a waiter counts from the first dump that saw
	// it, so LongestWait may be short by up to the time between two dumps,
	// never long; in a busy pool, where waits keep starting and ending
	// between dumps, a waiter counts from the latest dump until the
	// runtime reports whole minutes. A waiter served since the latest dump
	// is counted until the next sample. Both are 0 for a pool opened by
	// sql.Open("pgxleak", ...), which has no wait sampler.
	Waiting     int           `json:"waiting"`
	LongestWait time.Duration `json:"longest_wait_ns"`
	// Closed says the pool is closed: the counters are final.
	Closed bool `json:"closed"`
}

// Checkouts returns every connection checked out of db right now, oldest
// first. It returns [ErrNotTracked] for a *sql.DB not opened through
// pgxleak.
func Checkouts(db *sql.DB) ([]Checkout, error) {
	p := poolOf(db)
	if p == nil {
		return nil, ErrNotTracked
	}
	return p.checkouts(), nil
}

// Stats returns db.Stats() with pgxleak's counters. It returns
// [ErrNotTracked] for a *sql.DB not opened through pgxleak.
func Stats(db *sql.DB) (PoolStats, error) {
	p := poolOf(db)
	if p == nil {
		return PoolStats{}, ErrNotTracked
	}
	var s PoolStats
	s.DBStats = db.Stats()
	p.fillStats(&s)
	s.Unseen = len(p.unseenCheckouts())
	return s, nil
}

func (p *pool) fillStats(s *PoolStats) {
	p.tracker.fillStats(s)
	s.Terminated = p.diagnosis.terminated.Load()
	s.Deadlocks = p.monitor.recent.count(Deadlock)
	s.Waiting, s.LongestWait = p.diagnosis.waits.now(time.Now())
	p.mu.Lock()
	s.Closed = p.closed
	p.mu.Unlock()
}

// fillStats fills in the tracker's counters.
func (t *tracker) fillStats(s *PoolStats) {
	t.mu.Lock()
	s.Checkouts, s.Returns = t.closedCounts[0], t.closedCounts[1]
	for c := range t.conns {
		c.mu.Lock()
		s.Checkouts += c.checkouts
		s.Returns += c.returns
		if c.state == stateOut && !c.internal {
			s.CheckedOut++
		}
		c.mu.Unlock()
	}
	t.mu.Unlock()
	s.Suspected = t.suspectedLeaks.Load()
	s.Resolved = t.resolvedLeaks.Load()
	s.GarbageCollected = t.gcLeaks.Load()
	s.StillOut = t.stillOutLeaks.Load()
	s.LifetimeDiscarded = t.lifetimeDiscarded.Load()
}

// String is a short summary in four lines (five when closed):
//
//	3 connections in use of 10, 1 idle; 2 checked out by users
//	4 waits for a connection (1.2s in all)
//	120 checkouts, 118 returns
//	1 suspected leak (0 came back), 0 garbage-collected, 0 still out
func (s PoolStats) String() string {
	limit := "unlimited"
	if s.MaxOpenConnections > 0 {
		limit = strconv.Itoa(s.MaxOpenConnections)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s in use of %s, %d idle; %d checked out by users\n",
		numbered(s.InUse, "connection", "connections"), limit, s.Idle, s.CheckedOut)
	fmt.Fprintf(&b, "%s for a connection (%s in all)\n",
		numbered(int(s.WaitCount), "wait", "waits"), s.WaitDuration.Round(time.Millisecond))
	fmt.Fprintf(&b, "%s, %s\n",
		numbered(int(s.Checkouts), "checkout", "checkouts"), numbered(int(s.Returns), "return", "returns"))
	fmt.Fprintf(&b, "%s (%d came back), %d garbage-collected, %d still out",
		numbered(int(s.Suspected), "suspected leak", "suspected leaks"), s.Resolved, s.GarbageCollected, s.StillOut)
	if s.Closed {
		b.WriteString("\nclosed")
	}
	return b.String()
}
