package pgxleak

import (
	"sync"
	"sync/atomic"

	"github.com/pgxleak/pgxleak/internal/gdump"
	"github.com/pgxleak/pgxleak/internal/goid"
)

// Pending requests and timeouts: db.client.connection.pending_requests
// (callers waiting for a connection now) and db.client.connection.timeouts
// (waits that gave up).
//
// database/sql has a hook for neither. It counts a wait when it starts
// (DBStats.WaitCount) and adds its length when it ends (WaitDuration), so
// the number of waits under way is not in its statistics; and a caller
// whose context ends while it waits gets ctx.Err() straight from
// database/sql, with no driver call. Both are therefore read from the
// goroutine dumps the stuck-pool diagnosis takes, at most one per second
// per pool, while callers wait:
//
//   - pending_requests is the number of goroutines of the latest dump
//     blocked in database/sql waiting for a connection of this pool. It is
//     as old as that dump: at most about a second plus the sampling
//     interval while waits are under way. A wait that starts and ends
//     between two dumps is not seen (its time is in wait_time). While
//     WaitCount has not grown since a dump that saw no waiter, it is
//     exactly 0 and no dump is taken. A waiter whose pool the dump cannot
//     name (see internal/gdump) is not counted.
//   - timeouts counts the waiters a dump saw that left the wait without
//     checking out a connection on their own goroutine: while callers
//     wait, every checkout records its goroutine in a ring (one atomic
//     add and one atomic store, no lock, no allocation, and nothing at all
//     otherwise), and a waiter that is gone from the next dump and absent
//     from the checkouts made up to the dump after that gave up. It is a
//     lower bound: a wait that times out before any dump sees it (waits
//     shorter than the time between two dumps) is missed, and so are the
//     waiters of dumps taken while the ring was off or that overflowed
//     (more than servedRingSize checkouts between two dumps). It
//     over-counts only a caller handed a connection by DB.Conn that makes
//     no call on it before the dump after next.
//
// Both need the *sql.DB (pools opened with Open or OpenDB), and timeouts
// need goroutine identity (internal/goid); without them they are not
// reported.
type pendingState struct {
	on    atomic.Bool // checkouts are recorded in ring
	n     atomic.Uint64
	ring  atomic.Pointer[[servedRingSize]atomic.Uint64]
	epoch atomic.Uint64 // incremented each time recording starts

	pending  atomic.Int64 // waiters at the latest dump
	timeouts atomic.Int64 // waits that gave up, in all

	mu   sync.Mutex
	last *gdump.Snapshot // the latest dump counted; guarded by mu
	prev seenWaiters     // its waiters; guarded by mu
	gone []goneWaiters   // waiters gone from the latest dump, classified at the next; guarded by mu
	// waitCount is DBStats.WaitCount when the latest dump that saw no
	// waiter was taken (0, the pool's start, before any); -1 if the
	// latest dump saw some.
	waitCount int64 // guarded by mu
}

// servedRingSize is the number of checkouts remembered between two dumps:
// 16384 (128 KiB, allocated the first time the pool's callers wait).
const servedRingSize = 1 << 14

// seenWaiters are the waiters of one dump and where the ring stood just
// before it was taken.
type seenWaiters struct {
	ids   map[uint64]bool
	from  uint64 // ring position before the dump
	epoch uint64 // 0: the ring was off
}

// goneWaiters are waiters seen in one dump and gone from the next.
type goneWaiters struct {
	ids   []uint64
	from  uint64
	epoch uint64
}

// record notes that goroutine id checked out a connection. It is called
// on every checkout, under the connection's lock; it costs one atomic load
// unless callers wait.
func (s *pendingState) record(id uint64) {
	if !s.on.Load() || id == 0 {
		return
	}
	r := s.ring.Load()
	i := s.n.Add(1) - 1
	r[i%servedRingSize].Store(id)
}

// position returns where the ring stands and its epoch (0 when off), to be
// read just before a dump.
func (s *pendingState) position() (uint64, uint64) {
	if !s.on.Load() {
		return s.n.Load(), 0
	}
	return s.n.Load(), s.epoch.Load()
}

// arm turns recording on while callers may wait (or waiters await
// classification), and off otherwise. It runs on the monitor goroutine.
func (s *pendingState) arm(waiting bool) {
	s.mu.Lock()
	on := waiting || len(s.gone) > 0 || len(s.prev.ids) > 0
	s.mu.Unlock()
	switch {
	case on && !s.on.Load():
		if s.ring.Load() == nil {
			s.ring.Store(new([servedRingSize]atomic.Uint64))
		}
		s.epoch.Add(1)
		s.on.Store(true)
	case !on && s.on.Load():
		s.on.Store(false)
	}
}

// idle reports whether the latest dump saw no waiter and no wait started
// since: pending is then exactly 0 without a new dump.
func (s *pendingState) idle(waitCount int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waitCount >= 0 && s.waitCount == waitCount && len(s.gone) == 0
}

// countDump counts a dump's waiters of this pool: the pending requests,
// and the timeouts of the waiters gone since the dump before last. from
// and epoch are the ring's position before the dump, waitCount
// DBStats.WaitCount before it. ids are the waiters' goroutine IDs (0 when
// unknown). A dump counted already is ignored.
func (s *pendingState) countDump(d *gdump.Snapshot, from, epoch uint64, waitCount int64, ids []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d == nil || d == s.last {
		return
	}
	s.last = d
	s.pending.Store(int64(len(ids)))
	s.waitCount = -1
	if len(ids) == 0 {
		s.waitCount = waitCount
	}

	// The waiters gone at the previous dump: served if they checked out
	// since they were seen waiting, up to just before this dump.
	end := from
	for _, g := range s.gone {
		if g.epoch == 0 || g.epoch != epoch || end-g.from > servedRingSize {
			continue // the ring was off or wrapped: unknown, not counted
		}
		served := s.served(g.from, end)
		if s.n.Load()-g.from > servedRingSize {
			continue // overwritten while read
		}
		for _, id := range g.ids {
			if id != 0 && !served[id] {
				s.timeouts.Add(1)
			}
		}
	}
	s.gone = s.gone[:0]

	cur := seenWaiters{ids: make(map[uint64]bool, len(ids)), from: from, epoch: epoch}
	for _, id := range ids {
		cur.ids[id] = true
	}
	var gone []uint64
	for id := range s.prev.ids {
		if !cur.ids[id] {
			gone = append(gone, id)
		}
	}
	if len(gone) > 0 {
		s.gone = append(s.gone, goneWaiters{ids: gone, from: s.prev.from, epoch: s.prev.epoch})
	}
	s.prev = cur
}

// served returns the goroutines recorded in the ring from position from
// up to end.
func (s *pendingState) served(from, end uint64) map[uint64]bool {
	r := s.ring.Load()
	m := make(map[uint64]bool)
	if r == nil {
		return m
	}
	for i := from; i < end; i++ {
		m[r[i%servedRingSize].Load()] = true
	}
	return m
}

// waiterIDs returns the goroutine IDs of ws, or nil when goroutine
// identity is unavailable (a waiter gone from a dump could then not be
// told from one served).
func waiterIDs(ws []Goroutine) []uint64 {
	known := goid.Fast() // holders have goroutine IDs (see holderID)
	ids := make([]uint64, len(ws))
	for i, w := range ws {
		if known {
			ids[i] = w.ID
		}
	}
	return ids
}
