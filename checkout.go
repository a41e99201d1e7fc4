package pgxleak

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgxleak/pgxleak/internal/stack"
)

// connection states
const (
	stateIdle uint8 = iota
	stateOut
	stateClosed
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
	tracker   *tracker
	pgx       *pgx.Conn // nil unless the wrapped conn is pgx's
	pid       uint32
	expiresAt int64 // jittered end of life, in pool time; 0 means never
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
	idleSince int64 // guarded by mu; pool time it was connected by the opener or last returned
	pristine  bool  // guarded by mu
	lateFrom  int64 // guarded by mu; for a checkout seen late, its idleSince; 0 otherwise

	// watch is the connection's garbage-collection watch while no Rows
	// holds it (see gcWatch). It is used only inside driver calls on this
	// connection, which database/sql serialises, and needs no lock.
	watch *gcWatch
}

// checkoutLocked records a checkout. It is the hot path: no allocation, no
// symbolising; the stack goes into the connection's own buffer.
func (c *connState) checkoutLocked(ctx context.Context) {
	now, _ := c.tracker.clockNow()
	c.checkoutAtLocked(ctx, now)
}

// checkoutAtLocked is checkoutLocked with the pool time already read.
func (c *connState) checkoutAtLocked(ctx context.Context, now int64) {
	p := c.tracker
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
		if query == "" || !c.tracker.cfg.statements {
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
		if c.tracker.draining.Load() {
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
	if query != "" && c.tracker.cfg.statements {
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
	p := c.tracker
	now, timed := p.clockNow()
	c.mu.Lock()
	if c.state == stateOut {
		c.returnLocked(now, timed)
	}
	expired := c.expiresAt != 0 && now >= c.expiresAt
	discard = c.broken || c.terminated || p.cfg.maxUses > 0 && c.uses >= p.cfg.maxUses || expired
	c.mu.Unlock()
	if expired {
		p.lifetimeDiscarded.Add(1)
	}
	return discard
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
			c.tracker.tel.observeUse(now - c.checkoutAt)
		}
		if c.suspected {
			// The follow-up report says how long it was out: worth a
			// system clock read, once per leak.
			s := c.snapshotLocked(c.tracker.now())
			if c.tracker.enqueue(report{kind: LeakSuspected, resolved: true, snap: s}) {
				c.tracker.resolvedLeaks.Add(1)
			}
		}
	}
	c.ctx = nil
}

// reusableAt reports whether an idle connection may be checked out again
// at pool time now: not while draining, not past its jittered lifetime.
func (c *connState) reusableAt(now int64) bool {
	if c.expiresAt != 0 && now >= c.expiresAt {
		c.tracker.lifetimeDiscarded.Add(1)
		return false
	}
	return !c.tracker.draining.Load()
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

// snapshot is an unsymbolised copy of a checkout, taken under the
// connection's lock; symbolising happens later, off the hot path.
type snapshot struct {
	pcs        []uintptr
	checkoutAt int64
	seq        uint64 // the connection's checkout number: with conn, identifies the checkout
	lateFrom   int64
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
