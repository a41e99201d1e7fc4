package pgxleak

import (
	"context"
	"sync"
	"time"

	"github.com/pgxleak/pgxleak/internal/gdump"
	"github.com/pgxleak/pgxleak/internal/goid"
	"github.com/pgxleak/pgxleak/internal/stack"
)

// transaction states, as PostgreSQL's ReadyForQuery reports them
const (
	txUnknown       byte = 0
	txIdle          byte = 'I'
	txInTransaction byte = 'T'
	txFailed        byte = 'E'
)

func txStatusString(b byte) string {
	switch b {
	case txIdle:
		return "idle"
	case txInTransaction:
		return "in transaction"
	case txFailed:
		return "in failed transaction"
	}
	return "unknown"
}

// checkoutLocked records a checkout. It is the hot path: no allocation, no
// symbolising; the stack goes into the connection's own buffer.
func (c *connState) checkoutLocked(ctx context.Context) {
	now, _ := c.pool.clockNow()
	c.checkoutAtLocked(ctx, now)
}

// checkoutAtLocked is checkoutLocked with the pool time already read.
func (c *connState) checkoutAtLocked(ctx context.Context, now int64) {
	p := c.pool
	c.state = stateOut
	c.checkoutAt = now
	c.ctx = ctx
	_, c.internal = ctx.(*internalContext)
	c.suspected, c.blocked, c.gcLeaked, c.lateFrom = false, false, false, 0
	c.handoff, c.asked = false, nil
	c.npcs = 0
	c.goid = holderID()
	if c.internal {
		return
	}
	c.uses++
	c.checkouts++
	p.tel.pend.record(c.goid) // one atomic load unless callers wait (pending.go)
	if len(c.pcs) > 0 && (p.cfg.sampleEvery == 1 || c.uses%p.cfg.sampleEvery == 1) {
		c.npcs = stack.Capture(1, c.pcs)
	}
}

// noContext is the context of a driver call database/sql makes without one
// (Conn.Prepare, Conn.Begin, Stmt.Exec, Stmt.Query, for drivers that lack
// the context variants). It carries no span to link a report to, and Rows
// read under it are not watched for garbage collection: whether the
// caller's context could end is unknown.
type noContext struct{}

func (noContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (noContext) Done() <-chan struct{}       { return nil }
func (noContext) Err() error                  { return nil }
func (noContext) Value(any) any               { return nil }

// use is called at the start of every operation on the connection. An
// operation on a connection the tracker holds as idle is a checkout that
// made no earlier driver call: a connection database/sql's background
// opener handed to a waiting goroutine, or one that was returned without a
// session reset.
func (c *connState) use(ctx context.Context, query string) error {
	// The common case: checked out already, and the statement is the one
	// recorded, perhaps by an earlier checkout (or none is recorded).
	// Owner-only fields, read without mu; marking the statement as this
	// checkout's is an atomic store instead of a lock round trip.
	if c.state == stateOut {
		if query == "" || !c.pool.cfg.statements {
			return nil
		}
		if c.statement == query {
			if c.stmtAt.Load() != c.checkouts {
				c.stmtAt.Store(c.checkouts)
			}
			return nil
		}
	}
	c.mu.Lock()
	if c.state == stateIdle {
		if c.pool.tracker.draining.Load() {
			c.mu.Unlock()
			return ErrDraining
		}
		c.checkoutLocked(ctx)
		if c.pristine {
			// The opener handed it over: to the goroutine that waited
			// for it, if a goroutine dump saw that one wait.
			c.handoff = true
			c.asked = c.pool.tracker.waits.take(c.goid, c.pool.epoch.Add(time.Duration(c.idleSince)))
		}
		if c.pristine || c.noReset {
			// Seen late: it may have been out since it went idle. The
			// leak threshold counts from now (a report is certain), Held
			// from then (a bound, not an understatement).
			c.lateFrom, c.pristine = c.idleSince, false
		}
	}
	if query != "" && c.pool.cfg.statements {
		c.statement = query
		c.stmtAt.Store(c.checkouts)
	}
	c.mu.Unlock()
	return nil
}

// checkin records a return through IsValid and reports whether the
// connection has reached its end of life (maximum uses or jittered
// lifetime), or the pool drains, and it must be discarded.
func (c *connState) checkin() (discard bool) {
	p := c.pool
	now, timed := p.clockNow()
	c.mu.Lock()
	if c.state == stateOut {
		c.returnLocked(now, timed)
	}
	// While the pool drains, a connection given back is closed rather
	// than kept or handed to a waiter, who would be refused anyway: what
	// Drain waits for only ever decreases.
	discard = c.broken || c.terminated || p.cfg.maxUses > 0 && c.uses >= p.cfg.maxUses || p.tracker.draining.Load()
	c.mu.Unlock()
	return discard || c.lifeEnded(now)
}

// lifeEnded reports whether c is past its jittered end of life at pool
// time now and the jitter applies (see pool.jitterDue); if so, it
// counts the discard. The comparison is all a checkout or a return pays
// until then.
func (c *connState) lifeEnded(now int64) bool {
	if c.expiresAt == 0 || now < c.expiresAt || !c.pool.jitterDue() {
		return false
	}
	c.pool.tracker.lifetimeDiscarded.Add(1)
	return true
}

// returnLocked records a return at pool time now; timed says now is the
// system clock's, and the use time is recorded.
func (c *connState) returnLocked(now int64, timed bool) {
	c.state = stateIdle
	c.idleSince = now
	if !c.internal {
		c.returns++
		c.heldTotal += now - c.checkoutAt
		if timed {
			c.pool.tel.observeUse(now - c.checkoutAt)
		}
		switch {
		case c.suspected:
			// The follow-up report says how long it was out: worth a
			// system clock read, once per leak.
			s := c.snapshotLocked(c.pool.now())
			if c.pool.tracker.enqueue(report{kind: Resolved, snap: s}) {
				c.pool.tracker.resolvedLeaks.Add(1)
			}
		case c.heldBack == c.checkouts && !c.gcLeaked:
			// Held past the threshold, back before the server's view
			// came to judge it: the monitor judges it now, knowing how
			// long it was out. As rare as the case above.
			c.heldBack = 0
			c.pool.tracker.enqueue(report{snap: c.snapshotLocked(c.pool.now()), returned: true}) // no kind: to be judged
		}
	}
	c.ctx = nil
}

// reusableAt reports whether an idle connection may be checked out again
// at pool time now: not past its jittered end of life, not while draining.
func (c *connState) reusableAt(now int64) bool {
	return !c.lifeEnded(now) && !c.pool.tracker.draining.Load()
}

// markTerminated marks c's backend as terminated if c is still out on
// checkout seq (its checkouts count when it was chosen), and reports
// whether it did. Once marked, c is discarded at its return.
func (c *connState) markTerminated(seq uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOut || c.internal || c.checkouts != seq {
		return false
	}
	c.terminated = true
	return true
}

// afterStatement refreshes the transaction status from pgx, on the
// goroutine that ran the statement.
func (c *connState) afterStatement() {
	if c.pgx != nil {
		c.setTxStatus(txUnknown) // pgx's own status replaces it
	}
}

// afterTx records the end of a transaction. pgx reports its true state,
// which IsValid checks; for another driver a failed Commit or Rollback
// leaves the session's state unknown, so the connection is discarded at
// its return rather than handed to the next caller mid-transaction.
func (c *connState) afterTx(err error) {
	if c.pgx != nil {
		c.afterStatement()
		return
	}
	c.mu.Lock()
	c.txStatus = txIdle
	if err != nil {
		c.txStatus, c.broken = txUnknown, true
	}
	c.mu.Unlock()
}

// setTxStatus records the transaction status st, or pgx's own status when
// the driver is pgx. It runs on the goroutine using the connection.
func (c *connState) setTxStatus(st byte) {
	if c.pgx != nil {
		st = c.pgx.PgConn().TxStatus()
	}
	if st == c.txStatus { // owner-only field: no lock to read it
		return
	}
	c.mu.Lock()
	c.txStatus = st
	c.mu.Unlock()
}

// holderID returns the calling goroutine's ID for a checkout, or 0 when it
// cannot be read in a few nanoseconds; holders are then found by their
// checkout stack instead (see matchByStack), and reports say so.
func holderID() uint64 {
	if goid.Fast() {
		return goid.ID()
	}
	return 0
}

// isTerminated reports whether c's backend was terminated.
func (c *connState) isTerminated() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.terminated
}

// waitSite is where a goroutine waited for a connection of the pool, as a
// goroutine dump saw it: the line that asked, and the stack.
type waitSite struct {
	at    Frame
	stack []Frame
	ended time.Time // a later dump saw it no longer waiting, so the wait ended before; zero while it waits
}

// waitSites ties a connection database/sql's background opener hands to a
// waiting goroutine back to the line that asked for it. The handoff makes
// no driver call on that goroutine, so the checkout is first seen at the
// connection's first use (use); but the goroutine dumps the pool takes
// anyway (rate-limited, while callers wait, for reports and Inspect) show
// each waiter's stack, and goroutine identity names the waiter that made
// the first use. mu is a leaf lock.
type waitSites struct {
	mu    sync.Mutex
	dump  time.Time            // guarded by mu; when the last dump recorded began
	sites map[uint64]*waitSite // guarded by mu; by goroutine ID
}

// record notes the waiters of this pool a dump saw, marks the waits it no
// longer shows as ended, and forgets goroutines that have exited or whose
// wait a previous dump saw end: it holds the waiters of the last two
// dumps at most.
func (w *waitSites) record(d *gdump.Snapshot, waiters []Goroutine) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if d == nil || d.Started.Equal(w.dump) {
		return
	}
	w.dump = d.Started
	for id, s := range w.sites {
		switch {
		case d.Lookup(id) == nil && !d.Truncated, !s.ended.IsZero():
			// Exited, or its wait ended before the previous dump: a
			// handoff is used at once, so a long-lived goroutine that
			// waited once does not keep its stack here.
			delete(w.sites, id)
		default:
			s.ended = d.Started
		}
	}
	for _, g := range waiters {
		if g.ID == 0 || stack.Frame(g.At).IsZero() {
			continue
		}
		if w.sites == nil {
			w.sites = make(map[uint64]*waitSite)
		}
		w.sites[g.ID] = &waitSite{at: g.At, stack: g.Stack}
	}
}

// take returns, and forgets, where goroutine id waited for a connection
// the opener made at madeAt: nil unless a dump saw it wait, and saw its
// wait go on until the connection was made or saw nothing since.
func (w *waitSites) take(id uint64, madeAt time.Time) *waitSite {
	if id == 0 {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.sites[id]
	if s == nil {
		return nil
	}
	delete(w.sites, id)
	if !s.ended.IsZero() && s.ended.Before(madeAt) {
		return nil // that wait ended before this connection existed
	}
	return s
}
