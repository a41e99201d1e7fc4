package pgxleak

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"
)

// Drain stops new checkouts from db and waits until every checked-out
// connection has come back, or ctx ends. It then closes db. If connections
// were still out, it returns a *[LeakError] listing them with their
// culprits, and reports each as a [LeakStillOut] leak (once per pool: a
// second Drain, or the Close after it, lists them again but does not report
// them again). Those connections are not forcibly closed, since their
// goroutines may still be using them, and database/sql closes each when it
// is returned. It returns nil when every connection has come back, even if
// ctx ended meanwhile.
//
// Drain closes the idle connections at once, and each connection given
// back while it waits: they would not be handed out again.
//
// With [TerminateStillOut], their server backends are terminated first; the
// other options are ignored.
func Drain(ctx context.Context, db *sql.DB, opts ...Option) error {
	p := poolOf(db)
	if p == nil {
		return ErrNotTracked
	}
	dc := newVerbConfig(opts)
	p.tracker.draining.Store(true)
	// From here on no connection goes back to database/sql's idle list
	// (IsValid discards it): with that list emptied, every connection
	// still open is in a caller's hands, or on its way to being closed.
	// What Drain waits for is then the tracker's alone, and never races
	// the checkouts database/sql is refusing or the connections it is
	// closing, as its count of connections in use (DBStats.InUse) would.
	db.SetMaxIdleConns(0)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var cause error
	for cause == nil && p.tracker.pending() > 0 {
		select {
		case <-ctx.Done():
			cause = ctx.Err()
		case <-tick.C:
		}
	}
	// A Connect recording its connection is no I/O away from done, and
	// what it records must be listed.
	for p.tracker.handingOut.Load() > 0 {
		<-tick.C
	}
	var notes []string
	if dc.terminate {
		notes = p.terminateStillOut(context.WithoutCancel(ctx))
	}
	out := p.stillOut() // lists them, reports them once, and keeps Close from reporting them again
	out = append(out, p.unseen(math.MaxInt)...)
	err := db.Close()
	if len(out) > 0 {
		return &LeakError{Checkouts: out, Notes: notes, cause: cause}
	}
	return err
}

// TerminateStillOut makes [Drain] terminate the server backends of the
// connections still out when its context ends (pg_terminate_backend over
// a side connection, as [Terminate] does): the server rolls back their
// transactions and releases their locks, so a leaked transaction's row
// locks no longer block the next user of the database. The connections
// themselves stay out until their holders give them back, and are then
// discarded. The returned *[LeakError] marks each terminated checkout
// (Terminated) and notes any the server would not end.
func TerminateStillOut() Option {
	return verbOption{"TerminateStillOut", func(c *verbConfig) { c.terminate = true }}
}

// terminateStillOut terminates the backend of every connection still out,
// and returns notes on those it could not.
func (p *pool) terminateStillOut(ctx context.Context) []string {
	var notes []string
	for _, s := range p.tracker.outSnapshots(p.now()) {
		if s.pid == 0 {
			notes = append(notes, "a connection still out has no known backend PID (not pgx): not terminated")
			continue
		}
		if err := p.terminate(ctx, s.pid); err != nil {
			notes = append(notes, err.Error())
		}
	}
	return notes
}

// Terminate ends the server backend of a connection checked out of db,
// by its backend PID ([Checkout.BackendPID], as [Checkouts] and [Inspect]
// give it), with pg_terminate_backend over a side connection. The server
// rolls back its transaction and releases its locks at once. The
// connection stays checked out: database/sql counts it as open until its
// holder gives it back, and it is then discarded, never reused. Use it on
// a leak whose locks block others: the pool's capacity is not restored,
// the server's is.
//
// A connection given back before Terminate marks it is left alone (the
// next caller may hold it by now) and Terminate says so; once marked, it
// is discarded at its return, even one that comes before the server has
// ended the backend.
//
// Only a connection checked out of db can be terminated. It needs pgx's
// driver and a direct connection to PostgreSQL: behind PgBouncer the PID
// is PgBouncer's.
func Terminate(ctx context.Context, db *sql.DB, backendPID uint32) error {
	p := poolOf(db)
	if p == nil {
		return ErrNotTracked
	}
	return p.terminate(ctx, backendPID)
}

func (p *pool) terminate(ctx context.Context, pid uint32) error {
	if p.cfg.pgBouncer {
		return errors.New("pgxleak: Terminate: behind PgBouncer the backend PID is PgBouncer's; terminate it on the server")
	}
	var target *connState
	var seq uint64
	p.tracker.each(func(c *connState) {
		if pid != 0 && c.pid == pid && c.state == stateOut && !c.internal {
			target, seq = c, c.checkouts
		}
	})
	if target == nil {
		return fmt.Errorf("pgxleak: Terminate: PID %d is not a connection checked out of this pool", pid)
	}
	// The locks were released after the choice: the holder may have given
	// the connection back since, and another caller taken it, on the same
	// backend. Marked only if it is still out on the checkout chosen, and
	// marked before the server is asked: if it comes back from here on, it
	// is discarded at its return, never handed to the next caller. (The
	// holder's session is then ended after its return, which harms no
	// one: the connection is not reused.)
	if !target.markTerminated(seq) {
		return fmt.Errorf("pgxleak: Terminate: PID %d: the connection came back to the pool; not terminated", pid)
	}
	if err := p.diagnosis.side.terminate(ctx, pid); err != nil {
		return fmt.Errorf("pgxleak: Terminate: PID %d: %w", pid, err)
	}
	p.diagnosis.terminated.Add(1)
	return nil
}
