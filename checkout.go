package pgxleak

import (
	"context"
	"time"

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
	c.suspected, c.gcLeaked, c.lateFrom = false, false, 0
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
// lifetime) and must be discarded.
func (c *connState) checkin() (discard bool) {
	p := c.pool
	now, timed := p.clockNow()
	c.mu.Lock()
	if c.state == stateOut {
		c.returnLocked(now, timed)
	}
	discard = c.broken || c.terminated || p.cfg.maxUses > 0 && c.uses >= p.cfg.maxUses
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
		if c.suspected {
			// The follow-up report says how long it was out: worth a
			// system clock read, once per leak.
			s := c.snapshotLocked(c.pool.now())
			if c.pool.tracker.enqueue(report{kind: Resolved, snap: s}) {
				c.pool.tracker.resolvedLeaks.Add(1)
			}
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
