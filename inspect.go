package pgxleak

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"slices"
	"time"
)

// ErrDraining is returned for new checkouts while [Drain] runs.
var ErrDraining = errors.New("pgxleak: pool is draining; no new connections are handed out")

// PoolStats is the tracker's counters next to database/sql's.
type PoolStats struct {
	sql.DBStats
	Checkouts        uint64 `json:"checkouts"`         // checkouts seen by the tracker (the pool's own warm-ups excluded)
	Returns          uint64 `json:"returns"`           // returns matched to a checkout
	CheckedOut       int    `json:"checked_out"`       // checked out now by users, by the tracker's count (DBStats.InUse also counts the pool's own warm-ups)
	Suspected        uint64 `json:"suspected"`         // suspected leaks reported
	Resolved         uint64 `json:"resolved"`          // suspected leaks that came back
	GarbageCollected uint64 `json:"garbage_collected"` // Rows garbage-collected without Close
	StillOut         uint64 `json:"still_out"`         // connections still out at Drain or Close
	// LifetimeDiscarded counts connections discarded at the end of their
	// jittered lifetime (WithConnMaxLifetime), which pgxleak enforces
	// itself: DBStats.MaxLifetimeClosed counts only database/sql's own,
	// later, closes.
	LifetimeDiscarded uint64 `json:"lifetime_discarded"`
	// Terminated counts backends ended by Terminate or Drain's
	// TerminateStillOut. database/sql still counts each as open (in
	// DBStats.InUse and OpenConnections) until its holder gives it back:
	// terminating frees the server and its locks, not the pool's slot.
	Terminated uint64 `json:"terminated"`
	// Unseen counts connections database/sql has in use (DBStats.InUse)
	// that no driver call has shown the tracker yet: handed out by its
	// background opener. Each is also listed by Checkouts, with Unseen set.
	Unseen int `json:"unseen"`
}

// Waiter is a goroutine blocked waiting for a connection of the pool.
type Waiter struct {
	Goroutine uint64        `json:"goroutine"`
	At        Frame         `json:"at"`              // its innermost frame of user code: the line that asked for a connection
	Waited    time.Duration `json:"waited_ns"`       // as the goroutine dump reports it (whole minutes; 0 below one)
	Stack     []Frame       `json:"stack,omitempty"` // innermost first
	// Holds lists the connections of the same pool this goroutine holds
	// while it waits: non-empty means a deadlock (it waits for itself).
	Holds []Checkout `json:"holds,omitempty"`
}

// Inspection is the whole picture of one pool at one moment: what
// [Inspect] returns, and what the live page shows.
type Inspection struct {
	Pool      string     `json:"pool"`
	TakenAt   time.Time  `json:"taken_at"`
	Stats     PoolStats  `json:"stats"`
	Checkouts []Checkout `json:"checkouts"` // longest held first, with Holder and Server where known
	Waiters   []Waiter   `json:"waiters"`
	// Notes says what could not be seen and why, e.g. "server view
	// unavailable: too many clients already". Empty when everything was.
	Notes []string `json:"notes,omitempty"`
	// Deadlocked says the pool is full and every connection is held by a
	// goroutine that waits for another one: nothing can return one.
	Deadlocked bool `json:"deadlocked,omitempty"`
	// Verdict says whether the pool is leaking, undersized, blocked on
	// the server, deadlocked or healthy, with the reasoning in numbers.
	Verdict Verdict `json:"verdict"`
}

// Inspect returns the whole picture of db's pool: its counters, every
// checkout with its holder goroutine and the server's view of its backend,
// and the goroutines waiting for a connection. It takes a goroutine dump
// and queries the server over a side connection, so it costs milliseconds;
// [Checkouts] and [Stats] stay cheap. It returns [ErrNotTracked] for a
// *sql.DB not opened through pgxleak.
func Inspect(ctx context.Context, db *sql.DB) (Inspection, error) {
	p := trackerOf(db)
	if p == nil {
		return Inspection{}, ErrNotTracked
	}
	return p.inspect(ctx), nil
}

// inspect assembles an Inspection. The holder goroutines, the waiters and
// the server's view are joined in by the stuck-pool diagnosis.
func (p *tracker) inspect(ctx context.Context) Inspection {
	d := p.diagnoseFresh(ctx)
	in := Inspection{Pool: p.name(), TakenAt: d.at, Checkouts: slices.Clone(d.checkouts), Waiters: d.waiters, Notes: d.notes}
	if p.db != nil {
		in.Stats.DBStats = p.db.Stats()
	}
	p.fillStats(&in.Stats)
	slices.SortStableFunc(in.Checkouts, func(a, b Checkout) int { return cmp.Compare(b.Held, a.Held) })
	in.Deadlocked = d.poolDeadlocked(in.Stats.MaxOpenConnections)
	in.Verdict = p.judgeWith(in.Checkouts, in.Waiters, in.Stats.InUse, in.Stats.MaxOpenConnections)
	return in
}

// Checkouts returns every connection checked out of db right now, oldest
// first. It returns nil for a *sql.DB not opened through pgxleak.
func Checkouts(db *sql.DB) []Checkout {
	p := trackerOf(db)
	if p == nil {
		return nil
	}
	return p.checkouts()
}

// Stats returns db.Stats() with the tracker's counters. For a *sql.DB not
// opened through pgxleak only DBStats is filled.
func Stats(db *sql.DB) PoolStats {
	var s PoolStats
	if db == nil {
		return s
	}
	s.DBStats = db.Stats()
	if p := trackerOf(db); p != nil {
		p.fillStats(&s)
		s.Unseen = len(p.unseenCheckouts())
	}
	return s
}

// Drain stops new checkouts from db and waits until every checked-out
// connection has come back, or ctx ends. It then closes db. If connections
// were still out, it returns a *[LeakError] listing them with their
// culprits, and reports each as a [LeakStillOut] leak (once per pool: a
// second Drain, or the Close after it, lists them again but does not report
// them again). Those connections are not forcibly closed, since their
// goroutines may still be using them, and database/sql closes each when it
// is returned.
// With [TerminateStillOut], their server backends are terminated first.
func Drain(ctx context.Context, db *sql.DB, opts ...DrainOption) error {
	p := trackerOf(db)
	if p == nil {
		return ErrNotTracked
	}
	var dc drainConfig
	for _, o := range opts {
		if o != nil {
			o.applyDrain(&dc)
		}
	}
	p.draining.Store(true)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var cause error
	// database/sql's own count too: a connection its background opener
	// handed out is in use with no driver call the tracker could see. A
	// connection whose Rows was garbage-collected never comes back.
	for (p.returnable() > 0 || p.handingOut.Load() > 0 || db.Stats().InUse > p.lost()) && cause == nil {
		select {
		case <-ctx.Done():
			cause = ctx.Err()
		case <-tick.C:
		}
	}
	var notes []string
	if dc.terminate {
		notes = p.terminateStillOut(context.WithoutCancel(ctx))
	}
	out := p.stillOut() // lists them, reports them once, and keeps Close from reporting them again
	unseen := p.unseenCheckouts()
	out = append(out, unseen...)
	unlisted := db.Stats().InUse - p.outCount()
	err := db.Close()
	if len(out) > 0 || unlisted > 0 {
		return &LeakError{Checkouts: out, Unlisted: max(unlisted-len(unseen), 0), Notes: notes, cause: cause}
	}
	return err
}

// A DrainOption changes what [Drain] does with connections still out when
// its context ends.
type DrainOption interface {
	applyDrain(*drainConfig)
}

type drainConfig struct {
	terminate bool
}

type drainOptionFunc func(*drainConfig)

func (f drainOptionFunc) applyDrain(c *drainConfig) { f(c) }

// TerminateStillOut makes [Drain] terminate the server backends of the
// connections still out when its context ends (pg_terminate_backend over
// a side connection, as [Terminate] does): the server rolls back their
// transactions and releases their locks, so a leaked transaction's row
// locks no longer block the next user of the database. The connections
// themselves stay out until their holders give them back, and are then
// discarded. The returned *[LeakError] marks each terminated checkout
// (Terminated) and notes any the server would not end.
func TerminateStillOut() DrainOption {
	return drainOptionFunc(func(c *drainConfig) { c.terminate = true })
}

// terminateStillOut terminates the backend of every connection still out,
// and returns notes on those it could not.
func (p *tracker) terminateStillOut(ctx context.Context) []string {
	var notes []string
	for _, s := range p.outSnapshots() {
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

func (p *tracker) checkouts() []Checkout {
	snaps := p.outSnapshots()
	out := make([]Checkout, len(snaps))
	for i, s := range snaps {
		out[i] = p.describe(s)
	}
	return append(out, p.unseenCheckouts()...)
}

// lost counts the connections out that can never come back: their Rows
// was garbage-collected.
func (p *tracker) lost() (n int) {
	p.each(func(c *connState) {
		if c.state == stateOut && !c.internal && c.gcLeaked {
			n++
		}
	})
	return n
}

// outCount counts the connections the tracker has seen checked out, the
// pool's own included: the part of DBStats.InUse it can explain.
func (p *tracker) outCount() (n int) {
	p.each(func(c *connState) {
		if c.state == stateOut {
			n++
		}
	})
	return n
}

// unseenCheckouts reconciles the tracker with database/sql's count of
// connections in use. database/sql's background opener connects on its
// own goroutine and hands the connection to a waiting caller with no
// driver call on the caller's goroutine, and a connection it made is
// handed out with no ResetSession until a caller returned it once (sql.go:
// openNewConnection, putConnDBLocked, driverConn.resetSession). Such a
// checkout is seen only at its first operation. Until then, DBStats.InUse
// counts it and the tracker does not: each connection of that difference
// that can only be one of those (connected by the opener and never seen
// out, or, for a driver without ResetSession, any idle one) is listed with
// Unseen set. DBStats.InUse also counts connections being opened or
// closed, which are not listed.
//
// It reads db.Stats() before taking the tracker's locks: database/sql
// closes connections under its own lock, and closing takes the tracker's.
func (p *tracker) unseenCheckouts() []Checkout {
	if p.db == nil {
		return nil
	}
	inUse := p.db.Stats().InUse
	now := p.now()
	var out int
	type candidate struct {
		pid       uint32
		idleSince int64
	}
	var candidates []candidate
	p.each(func(c *connState) {
		switch {
		case c.state == stateOut:
			out++
		case c.state == stateIdle && (c.pristine || c.noReset):
			candidates = append(candidates, candidate{c.pid, c.idleSince})
		}
	})
	n := min(inUse-out, len(candidates))
	if n <= 0 {
		return nil
	}
	slices.SortFunc(candidates, func(a, b candidate) int { return cmp.Compare(a.idleSince, b.idleSince) })
	name := p.name()
	unseen := make([]Checkout, n)
	for i := range unseen {
		// Which candidates are out is known only when all of them are;
		// otherwise each could be the oldest, whose age bounds them all.
		c := candidates[0]
		if n == len(candidates) {
			c = candidates[i]
		}
		unseen[i] = Checkout{
			Pool:         name,
			CheckedOutAt: p.epoch.Add(time.Duration(c.idleSince)).Round(0),
			Held:         time.Duration(now - c.idleSince),
			TxStatus:     txStatusString(txUnknown),
			Unseen:       true,
		}
		if n == len(candidates) {
			unseen[i].BackendPID = c.pid
		}
	}
	return unseen
}

func (p *tracker) fillStats(s *PoolStats) {
	p.mu.Lock()
	s.Checkouts, s.Returns = p.closedCounts[0], p.closedCounts[1]
	for c := range p.conns {
		c.mu.Lock()
		s.Checkouts += c.checkouts
		s.Returns += c.returns
		if c.state == stateOut && !c.internal {
			s.CheckedOut++
		}
		c.mu.Unlock()
	}
	p.mu.Unlock()
	s.Suspected = p.suspectedLeaks.Load()
	s.Resolved = p.resolvedLeaks.Load()
	s.GarbageCollected = p.gcLeaks.Load()
	s.StillOut = p.stillOutLeaks.Load()
	s.LifetimeDiscarded = p.lifetimeDiscarded.Load()
	s.Terminated = p.stuck.terminated.Load()
}

// stillOut returns every connection still out, and the first time it is
// called for a pool reports each as LeakStillOut.
func (p *tracker) stillOut() []Checkout {
	p.mu.Lock()
	issued := p.stillOutIssued
	p.stillOutIssued = true
	p.mu.Unlock()
	snaps := p.outSnapshots()
	out := make([]Checkout, len(snaps))
	for i, s := range snaps {
		out[i] = p.describe(s)
		if !issued && p.enqueue(report{kind: LeakStillOut, snap: s}) { // emitted by the monitor before close returns
			p.stillOutLeaks.Add(1)
		}
	}
	return out
}
