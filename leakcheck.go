package pgxleak

// The leak-detection core: the checkout record (connState, one per
// connection, with its ownership rules), the tracker of one pool's
// checkouts, the report queue the hot path and the garbage-collection
// watch feed, and the threshold scan. The hot path itself (checkout, use,
// return) is in checkout.go; the monitor that empties the queue in
// monitor.go.

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
)

// connection states
const (
	stateIdle uint8 = iota
	stateOut
	stateClosed
)

// connState is the tracker's record of one connection: the per-connection
// state machine idle → out → idle … → closed.
//
// Ownership:
//   - tracker, pgx, pid, expiresAt and noReset are set once, before the
//     connection is handed to database/sql, and never change.
//   - mu guards the rest. database/sql uses a connection from one goroutine
//     at a time, so mu is uncontended except when the monitor or an
//     inspection reads it.
//   - Owner-only fields (marked "owner") are written only inside driver
//     calls on the connection (checkout, use, return), under mu. database/sql
//     makes those calls one at a time, with happens-before edges between the
//     goroutines that make them, so those calls may read owner fields
//     without mu; the monitor and inspections read them only under mu and
//     never write them. That lets the per-operation path (use,
//     afterStatement) skip the lock when nothing changes.
//   - watch is touched only inside driver calls and needs no lock at all.
type connState struct {
	pool      *pool
	pgx       *pgx.Conn // nil unless the wrapped conn is pgx's
	pid       uint32
	expiresAt int64 // jittered end of life, in pool time; 0 means none (see pool.register)
	noReset   bool  // the driver has no ResetSession: no reuse is seen before its first operation

	mu         sync.Mutex
	state      uint8           // owner; guarded by mu
	internal   bool            // guarded by mu; checked out by the pool itself (warm-up)
	checkoutAt int64           // guarded by mu; pool time
	ctx        context.Context // guarded by mu; the checkout's context, for trace links; nil once returned
	pcs        []uintptr       // guarded by mu; capture buffer, allocated once per connection
	npcs       int             // guarded by mu
	statement  string          // owner; guarded by mu; the last statement of any checkout
	stmtAt     atomic.Uint64   // owner; the checkout (checkouts) that last ran statement
	txStatus   byte            // owner; guarded by mu
	suspected  bool            // guarded by mu
	blocked    bool            // guarded by mu; reported as blocked on another backend's lock, not as a leak
	gcLeaked   bool            // guarded by mu
	reportedAt [2]int64        // guarded by mu; pool time it was reported as suspected, as garbage-collected
	broken     bool            // guarded by mu; a transaction ended in an unknown state: discard at return
	uses       int64           // guarded by mu; user checkouts, for WithMaxUses and sampling
	checkouts  uint64          // owner; guarded by mu
	returns    uint64          // guarded by mu
	heldTotal  int64           // guarded by mu; the use time of the returns, in ns (for the verdict's Little's law)
	goid       uint64          // guarded by mu; the checking-out goroutine (see holderID); 0 if unknown
	terminated bool            // guarded by mu; its backend was terminated (Terminate, Drain): discard at return
	// A checkout that made no driver call (see use) can only have begun
	// after idleSince. pristine marks a connection database/sql's
	// background opener made and nobody was seen to check out: database/sql
	// hands it out with no ResetSession (it resets only connections
	// returned by a caller, sql.go: driverConn.resetSession, putConn).
	idleSince int64     // guarded by mu; pool time it was connected by the opener or last returned
	pristine  bool      // guarded by mu
	lateFrom  int64     // guarded by mu; for a checkout seen late, its idleSince; 0 otherwise
	handoff   bool      // guarded by mu; the checkout was seen late on a pristine connection: the opener handed it over
	asked     *waitSite // guarded by mu; for a handoff, where its goroutine waited for it, if a goroutine dump saw it

	// decided is the checkout (checkouts) whose stack was checked for the
	// functions WithIgnoredFunction gave Open, once it passed the leak
	// threshold; onPurpose says it was held on purpose (see pool.scanLeaks).
	decided   uint64 // guarded by mu; 0: none
	onPurpose bool   // guarded by mu

	// heldBack is the checkout (checkouts) the last scan held back
	// (scanAwait) until the server's view arrives; 0: none. If it comes
	// back first, its return hands it to the monitor to judge (see
	// returnLocked).
	heldBack uint64 // guarded by mu

	// cameBack, when set, is set to true when the connection comes back
	// (database/sql closes it): a checkout still out when its pool
	// closed, which VerifyTestMain keeps (see watchReturn).
	cameBack *atomic.Bool // guarded by mu

	// watch is the connection's garbage-collection watch while no Rows
	// holds it (see gcWatch). It is used only inside driver calls on this
	// connection, which database/sql serialises, and needs no lock.
	watch *gcWatch
}

// snapshot is an unsymbolised copy of a checkout, taken under the
// connection's lock; symbolising happens later, off the hot path.
type snapshot struct {
	pcs        []uintptr
	checkoutAt int64
	seq        uint64 // the connection's checkout number: with conn, identifies the checkout
	lateFrom   int64
	handoff    bool
	asked      *waitSite
	held       int64
	pid        uint32
	statement  string
	txStatus   byte
	suspected  bool
	gcLeaked   bool
	reportedAt [2]int64 // when reported as suspected, as garbage-collected
	goid       uint64
	ctx        context.Context
	conn       *connState // which connection, for telemetry to match a leak with its return
}

func (c *connState) snapshotLocked(now int64) snapshot {
	statement := c.statement
	if c.stmtAt.Load() != c.checkouts { // an earlier checkout's
		statement = ""
	}
	return snapshot{
		pcs:        slices.Clone(c.pcs[:c.npcs]),
		checkoutAt: c.checkoutAt,
		seq:        c.checkouts,
		lateFrom:   c.lateFrom,
		handoff:    c.handoff,
		asked:      c.asked,
		held:       now - c.checkoutAt,
		pid:        c.pid,
		statement:  statement,
		txStatus:   c.txStatus,
		suspected:  c.suspected,
		gcLeaked:   c.gcLeaked,
		reportedAt: c.reportedAt,
		goid:       c.goid,
		ctx:        c.ctx,
		conn:       c,
	}
}

// tracker tracks the checkouts of one pool: the hot path writes here.
//
// Ownership: clock is set once. mu guards conns, closedCounts and closedHeld, and is
// taken before any connection's mu. queueMu guards the report queue, which
// the return path and garbage-collection cleanups append to and the monitor
// drains. The atomics are read and written on the hot path.
type tracker struct {
	clock      *coarseClock // the hot path's clock (see clockNow)
	draining   atomic.Bool
	handingOut atomic.Int64 // Connect calls recording a new connection; Drain waits for them (ResetSession: see there)

	mu           sync.Mutex
	conns        map[*connState]struct{} // guarded by mu
	closedCounts [2]uint64               // guarded by mu; checkouts, returns of connections already closed
	closedHeld   int64                   // guarded by mu; their use time, in ns (for the verdict's Little's law)

	suspectedLeaks    atomic.Uint64
	resolvedLeaks     atomic.Uint64
	gcLeaks           atomic.Uint64
	stillOutLeaks     atomic.Uint64
	lifetimeDiscarded atomic.Uint64 // connections discarded at their jittered end of life, before database/sql's lifetime

	queueMu     sync.Mutex
	queue       []report      // guarded by queueMu
	queueClosed bool          // guarded by queueMu; the final flush is done: nothing more is reported
	wake        chan struct{} // signals the monitor that the queue has reports

	waits waitSites // where goroutines waited for a connection, for the opener's handoffs
}

// add starts tracking c.
func (t *tracker) add(c *connState) {
	t.mu.Lock()
	t.conns[c] = struct{}{}
	t.mu.Unlock()
}

// remove stops tracking c, which database/sql closed; if it was out, this
// is its return, at pool time now.
func (t *tracker) remove(c *connState, now int64, timed bool) {
	t.mu.Lock()
	c.mu.Lock()
	if c.state == stateOut {
		c.returnLocked(now, timed)
	}
	if c.state != stateClosed {
		if c.cameBack != nil {
			c.cameBack.Store(true)
		}
		c.state = stateClosed
		c.watch = nil // its cleanup's argument reaches c, and c reached it
		t.closedCounts[0] += c.checkouts
		t.closedCounts[1] += c.returns
		t.closedHeld += c.heldTotal
		delete(t.conns, c)
	}
	c.mu.Unlock()
	t.mu.Unlock()
}

// watchReturn makes back record when the checkout seq comes back, and
// reports whether it is still out. It is for a pool closed with seq out:
// database/sql then closes every connection that comes back (tracker.remove).
func (c *connState) watchReturn(seq uint64, back *atomic.Bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOut || c.checkouts != seq {
		return false
	}
	c.cameBack = back
	return true
}

// each calls f for every open connection, under t.mu and the connection's
// lock, in no particular order.
func (t *tracker) each(f func(c *connState)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		c.mu.Lock()
		f(c)
		c.mu.Unlock()
	}
}

// size is the number of connections tracked.
func (t *tracker) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// returnable counts the connections out that may still come back and
// are worth waiting for: a connection whose Rows was garbage-collected
// never will, and one whose backend was terminated has no work left to
// finish.
func (t *tracker) returnable() (n int) {
	t.each(func(c *connState) {
		if c.state == stateOut && !c.internal && !c.gcLeaked && !c.terminated {
			n++
		}
	})
	return n
}

// heldUnseen counts the idle connections that may be out without the
// tracker having seen it (see unseenCheckouts): made by database/sql's
// background opener and never seen out, or any, for a driver without
// ResetSession. While a pool drains it has no idle connections left in
// database/sql (see Drain), so each of them is in a caller's hands, or on
// its way to being closed.
func (t *tracker) heldUnseen() (n int) {
	t.each(func(c *connState) {
		if c.state == stateIdle && (c.pristine || c.noReset) {
			n++
		}
	})
	return n
}

// pending counts what Drain waits for: the connections out that may still
// come back, those that may be out unseen, and the Connect calls
// recording a new one. handingOut is read first: a Connect that is done
// with it has recorded its connection.
func (t *tracker) pending() int {
	n := int(t.handingOut.Load())
	return n + t.returnable() + t.heldUnseen()
}

// outSnapshots snapshots every user checkout out now, oldest first.
func (t *tracker) outSnapshots(now int64) []snapshot {
	var out []snapshot
	t.each(func(c *connState) {
		if c.state == stateOut && !c.internal {
			out = append(out, c.snapshotLocked(now))
		}
	})
	slices.SortFunc(out, func(a, b snapshot) int { return cmp.Compare(a.checkoutAt, b.checkoutAt) })
	return out
}

// report is a leak waiting to be symbolised and emitted.
type report struct {
	kind  Kind
	snap  snapshot
	stuck *stuckReport // a deadlock's holder and waiting line
	// returned: about a checkout held past the leak threshold that came
	// back while the scan held it back for the server's view. Queued
	// without a kind, the monitor judges it (pool.judgeReturned); judged,
	// it is not diagnosed, since its goroutine and backend have moved on,
	// and server is the view it was judged on, if one was read while it
	// was out.
	returned bool
	server   *ServerActivity
}

// enqueue hands a report to the monitor goroutine, and reports whether it
// was taken: after the pool's final flush at Close nothing is reported
// (nor counted) any more, since the pool reported what was out then. It is
// called on the return path and from cleanups, so it only appends and
// signals.
func (t *tracker) enqueue(r report) bool {
	t.queueMu.Lock()
	if t.queueClosed {
		t.queueMu.Unlock()
		return false
	}
	t.queue = append(t.queue, r)
	t.queueMu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
	return true
}

// takeQueue returns the queued reports and empties the queue; closing it
// makes every later enqueue refuse.
func (t *tracker) takeQueue(closing bool) []report {
	t.queueMu.Lock()
	defer t.queueMu.Unlock()
	q := t.queue
	t.queue = nil
	if closing {
		t.queueClosed = true
	}
	return q
}

// scan returns the checkouts held past limit at pool time now, once per
// checkout: those judge calls suspected leaks, marked suspected and
// counted, and those it calls blocked on another backend's lock (not
// leaks), marked blocked. judge runs under the connection's lock; a
// checkout it holds back is judged again at the next scan, and one it
// holds back for the server's view (scanAwait) is marked heldBack, so
// that it is judged at its return if it comes back first. A connection
// already reported as garbage-collected is not reported again.
func (t *tracker) scan(now, limit int64, judge func(c *connState) scanVerdict) (suspected, blocked []snapshot) {
	t.each(func(c *connState) {
		if c.state != stateOut || c.internal || c.suspected || c.blocked || c.gcLeaked || now-c.checkoutAt < limit {
			return
		}
		v := judge(c)
		c.heldBack = 0
		switch v {
		case scanAwait:
			c.heldBack = c.checkouts
		case scanSuspected:
			c.suspected, c.reportedAt[0] = true, now
			suspected = append(suspected, c.snapshotLocked(now))
		case scanBlocked:
			c.blocked = true
			blocked = append(blocked, c.snapshotLocked(now))
		}
	})
	t.suspectedLeaks.Add(uint64(len(suspected)))
	return suspected, blocked
}

// undecided returns the checkouts scan would report but for the decision
// whether they are held on purpose, which decide records.
func (t *tracker) undecided(now, limit int64) []snapshot {
	var found []snapshot
	t.each(func(c *connState) {
		if c.state == stateOut && !c.internal && !c.suspected && !c.gcLeaked && now-c.checkoutAt >= limit && c.decided != c.checkouts {
			found = append(found, c.snapshotLocked(now))
		}
	})
	return found
}

// decide records whether the checkout seq is held on purpose, if it is
// still the connection's current one.
func (c *connState) decide(seq uint64, onPurpose bool) {
	c.mu.Lock()
	if c.checkouts == seq {
		c.decided, c.onPurpose = seq, onPurpose
	}
	c.mu.Unlock()
}

// scanVerdict is what the monitor makes of a checkout held past the leak
// threshold.
type scanVerdict uint8

const (
	scanSuspected scanVerdict = iota // a suspected leak
	scanBlocked                      // its statement waits for another backend's lock: not a leak
	scanHold                         // not now: already reported otherwise (a deadlock), held on purpose, or not yet decided whether it is
	scanAwait                        // not yet: the server's view is due; judged at the next scan, or at its return
)

// ErrDraining is returned for new checkouts while [Drain] runs.
var ErrDraining = errors.New("pgxleak: pool is draining; no new connections are handed out")

// stuckReport is what a deadlock report carries beyond its checkout.
type stuckReport struct {
	holder         *Goroutine
	server         *ServerActivity
	waitingAt      Frame
	poolDeadlocked bool
}
