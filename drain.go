package pgxleak

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/pgxleak/pgxleak/internal/gdump"
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
// With [WithTerminateStillOut], it terminates server backends as that option
// says; the other options are ignored.
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
	var term *terminator
	if dc.terminate {
		term = &terminator{p: p}
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var cause error
	for cause == nil && p.tracker.pending() > 0 {
		if term != nil && !time.Now().Before(term.next) {
			term.pass(ctx, "")
			term.next = time.Now().Add(dumpInterval)
		}
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
	if term != nil {
		why := "still out when the wait ended"
		if cause != nil {
			why += " (" + cause.Error() + ")"
		}
		term.pass(context.WithoutCancel(ctx), why)
		notes = term.notes
	}
	out := p.stillOut() // lists them, reports them once, and keeps Close from reporting them again
	out = append(out, p.unseen(math.MaxInt)...)
	err := db.Close()
	if len(out) > 0 {
		return &LeakError{Checkouts: out, Notes: notes, cause: cause}
	}
	return err
}

// WithTerminateStillOut makes [Drain] terminate the server backends of the
// connections that hold others up, and of those still out when its
// context ends (pg_terminate_backend over a side connection, as
// [Terminate] does). The server rolls back their transactions and
// releases their locks, so a leaked transaction's row locks no longer
// block the rest of the pool, or the next user of the database. In order:
//
//  1. at once, and again about every second while Drain waits: each
//     connection whose holder goroutine has exited (or whose Rows was
//     garbage-collected unclosed), and each that is idle in a transaction
//     while its locks block another backend (pg_blocking_pids);
//  2. Drain then waits for the rest, the connections that waited on those
//     locks among them, to finish and come back; it does not wait for a
//     connection whose backend it terminated;
//  3. when ctx ends, every connection still out.
//
// The connections themselves stay out until their holders give them back,
// and are then discarded. The returned *[LeakError] marks each terminated
// checkout (Terminated), and its Notes name each terminated backend with
// its culprit line and why it was chosen, in the order they were
// terminated, and any the server would not end.
func WithTerminateStillOut() Option {
	return verbOption{"WithTerminateStillOut", func(c *verbConfig) { c.terminate = true }}
}

// terminator is Drain's WithTerminateStillOut: it ends the backends that hold
// others up first, and the rest when the wait ends, and says why for each.
type terminator struct {
	p     *pool
	next  time.Time // when the next pass for causes is due
	notes noteSet
}

// Reasons a backend is terminated, as the notes give them.
const (
	whyExited = "the goroutine that took it has exited"
	whyGC     = "its Rows was garbage-collected unclosed"
)

// pass terminates the connections out that hold others up: those whose
// holder is gone, and those idle in a transaction whose locks block
// another backend. With final set, it terminates every other connection
// still out too, giving final as the reason. The holders are read from a
// goroutine dump taken after the checkouts were listed, and the server's
// view is read now: neither comes from a cache.
func (t *terminator) pass(ctx context.Context, final string) {
	p := t.p
	var snaps []snapshot
	for _, s := range p.tracker.outSnapshots(p.now()) {
		if !s.conn.isTerminated() {
			snaps = append(snaps, s)
		}
	}
	if len(snaps) == 0 {
		return
	}
	if p.cfg.pgBouncer {
		if final != "" {
			t.notes.add("pgxleak: WithTerminateStillOut: behind PgBouncer the backend PIDs are PgBouncer's; none was terminated")
		}
		return
	}
	var dump *gdump.Snapshot
	var pids []uint32
	culprits := make(map[uint32]Frame)
	described := make([]Checkout, len(snaps))
	for i, s := range snaps {
		described[i] = p.describe(s)
		if s.goid != 0 && dump == nil {
			dump = gdump.Take(p.diagnosis.dumps.MaxBytes)
		}
		if s.pid != 0 {
			pids = append(pids, s.pid)
			culprits[s.pid] = described[i].Culprit
		}
	}
	var view map[uint32]ServerActivity
	if len(pids) > 0 {
		var err error
		// A pass while Drain waits tries again a second later; the final
		// one says what it could not see.
		if view, err = p.diagnosis.side.read(ctx, pids); err != nil && final != "" {
			t.notes.add("server view unavailable, so no backend was chosen for its locks: " + err.Error())
		}
	}
	for i, s := range snaps {
		var why []string
		switch {
		case s.gcLeaked:
			why = append(why, whyGC)
		case dump != nil && s.goid != 0 && !dump.Truncated && dump.Lookup(s.goid) == nil:
			why = append(why, whyExited)
		}
		if a, ok := view[s.pid]; ok && strings.HasPrefix(a.State, "idle in transaction") && len(a.Blocking) > 0 {
			a.Culprits = culprits
			why = append(why, a.State+", holding locks that block "+a.pids(a.Blocking))
		}
		if len(why) == 0 {
			if final == "" {
				continue
			}
			why = append(why, final)
		}
		line := shortLine(described[i].Culprit)
		if s.pid == 0 {
			if final != "" {
				t.notes.add("a connection still out (checked out at " + line + ") has no known backend PID (not pgx): not terminated")
			}
			continue
		}
		// Once chosen (and marked), it is terminated even if ctx ends
		// meanwhile: the side connection bounds the call.
		switch err := p.terminateCheckout(context.WithoutCancel(ctx), s.conn, s.seq); {
		case errors.Is(err, errCameBack): // not out any more: nothing to do or say
		case err != nil:
			t.notes.add(fmt.Sprintf("could not terminate backend PID %d (checked out at %s): %v", s.pid, line, err))
		default:
			t.notes.add(fmt.Sprintf("terminated backend PID %d (checked out at %s): %s", s.pid, line, strings.Join(why, "; ")))
		}
	}
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
	if err := p.terminateCheckout(ctx, target, seq); err != nil {
		return fmt.Errorf("pgxleak: Terminate: PID %d: %w", pid, err)
	}
	return nil
}

// errCameBack says a connection chosen for termination was given back
// before it was marked.
var errCameBack = errors.New("the connection came back to the pool; not terminated")

// terminateCheckout terminates the backend of c if it is still out on
// checkout seq.
func (p *pool) terminateCheckout(ctx context.Context, c *connState, seq uint64) error {
	// The locks were released after the choice: the holder may have given
	// the connection back since, and another caller taken it, on the same
	// backend. Marked only if it is still out on the checkout chosen, and
	// marked before the server is asked: if it comes back from here on, it
	// is discarded at its return, never handed to the next caller. (The
	// holder's session is then ended after its return, which harms no
	// one: the connection is not reused.)
	if !c.markTerminated(seq) {
		return errCameBack
	}
	if err := p.diagnosis.side.terminate(ctx, c.pid); err != nil {
		return err
	}
	p.diagnosis.terminated.Add(1)
	return nil
}
