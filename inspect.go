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
	// Deadlocks counts connections reported held by a goroutine that waits
	// for another of the same pool.
	Deadlocks uint64 `json:"deadlocks"`
	// Closed says the pool is closed: the counters are final.
	Closed bool `json:"closed"`
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
	// Settings are the pool's effective settings, defaults resolved.
	Settings Settings `json:"settings"`
	// Reports are the pool's recent reports, most recent first: every
	// report of the same kind at the same line is one entry, with its count
	// (at most 50 entries).
	Reports []Report `json:"reports"`
	// Server is the server's connection limits and fleet, as
	// [CheckCapacity] reads them for one instance, but over the pool's side
	// connection and at most every 5 seconds (an inspection waits at most
	// half a second for a read under way, then gives the previous one). It
	// is nil under [WithoutServerView] or [WithPgBouncer], and when the
	// server was not read yet; Notes then says why.
	Server *Capacity `json:"server,omitempty"`
}

// Settings are a pool's effective settings, defaults resolved.
type Settings struct {
	// Tuned is false for a pool opened by sql.Open("pgxleak", dsn): the
	// pool limits below (MaxOpen to MaxUses) are then pgxleak's defaults,
	// not applied, and database/sql's own limits apply; the leak-detection
	// settings apply either way.
	Tuned                 bool          `json:"tuned"`
	MaxOpen               int           `json:"max_open"` // 0 means unlimited
	MaxIdle               int           `json:"max_idle"`
	MinIdle               int           `json:"min_idle"`
	ConnMaxLifetime       time.Duration `json:"conn_max_lifetime_ns"` // 0 means forever
	ConnMaxLifetimeJitter time.Duration `json:"conn_max_lifetime_jitter_ns"`
	ConnMaxIdleTime       time.Duration `json:"conn_max_idle_time_ns"` // 0 means forever
	MaxUses               int64         `json:"max_uses"`              // 0 means unlimited
	LeakThreshold         time.Duration `json:"leak_threshold_ns"`     // 0 means off
	SlowWaitThreshold     time.Duration `json:"slow_wait_threshold_ns"`
	WaitSampleInterval    time.Duration `json:"wait_sample_interval_ns"`
	ReportInterval        time.Duration `json:"report_interval_ns"`
	StackDepth            int           `json:"stack_depth"`
	StackSampling         int64         `json:"stack_sampling"`
	Statements            bool          `json:"statements"`
	GCDetection           bool          `json:"gc_detection"`
	PgBouncer             bool          `json:"pgbouncer"`
	// ServerView is false under WithoutServerView: reports and the page do
	// not read pg_stat_activity.
	ServerView bool `json:"server_view"`
	// IdleInTransactionTimeout is the idle_in_transaction_session_timeout
	// set on the pool's sessions; 0 means the server's own.
	IdleInTransactionTimeout time.Duration `json:"idle_in_transaction_timeout_ns"`
}

// Inspect returns the whole picture of db's pool: its counters, every
// checkout with its holder goroutine and the server's view of its backend,
// and the goroutines waiting for a connection. It takes a goroutine dump
// and queries the server over a side connection, so it costs milliseconds;
// [Checkouts] and [Stats] stay cheap. It returns [ErrNotTracked] for a
// *sql.DB not opened through pgxleak.
func Inspect(ctx context.Context, db *sql.DB) (Inspection, error) {
	p := poolOf(db)
	if p == nil {
		return Inspection{}, ErrNotTracked
	}
	return p.inspect(ctx), nil
}

// inspect assembles an Inspection. The holder goroutines, the waiters and
// the server's view are joined in by the stuck-pool diagnosis.
func (p *pool) inspect(ctx context.Context) Inspection {
	d := p.diagnoseFresh(ctx)
	in := Inspection{Pool: p.name(), TakenAt: d.at, Checkouts: slices.Clone(d.checkouts), Waiters: d.waiters, Notes: d.notes}
	if p.db != nil {
		in.Stats.DBStats = p.db.Stats()
	}
	p.fillStats(&in.Stats)
	slices.SortStableFunc(in.Checkouts, func(a, b Checkout) int { return cmp.Compare(b.Held, a.Held) })
	in.Deadlocked = d.poolDeadlocked(in.Stats.MaxOpenConnections)
	in.Settings = p.settings()
	in.Reports = p.monitor.recent.list()
	var note string
	if in.Server, note = p.serverCapacity(ctx); note != "" {
		in.Notes = append(in.Notes, note)
	}
	return in
}

func (p *pool) settings() Settings {
	c := p.cfg
	s := Settings{
		Tuned:                 p.db != nil,
		MaxOpen:               c.maxOpen,
		MaxIdle:               c.maxIdle,
		MinIdle:               c.minIdle,
		ConnMaxLifetime:       c.maxLifetime,
		ConnMaxLifetimeJitter: c.lifetimeJitter,
		ConnMaxIdleTime:       c.maxIdleTime,
		MaxUses:               c.maxUses,
		LeakThreshold:         c.leakThreshold,
		SlowWaitThreshold:     c.slowWaitThreshold,
		WaitSampleInterval:    c.waitInterval,
		ReportInterval:        c.reportInterval,
		StackDepth:            c.stackDepth,
		StackSampling:         c.sampleEvery,
		Statements:            c.statements,
		GCDetection:           c.gcDetection,
		PgBouncer:             c.pgBouncer,

		ServerView:               c.serverView,
		IdleInTransactionTimeout: c.idleInTx,
	}
	if p.db != nil {
		s.MaxOpen = p.db.Stats().MaxOpenConnections
	}
	return s
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
	p := poolOf(db)
	if p == nil {
		return ErrNotTracked
	}
	var dc drainConfig
	for _, o := range opts {
		if o != nil {
			o.applyDrain(&dc)
		}
	}
	p.tracker.draining.Store(true)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var cause error
	// database/sql's own count too: a connection its background opener
	// handed out is in use with no driver call the tracker could see. A
	// connection whose Rows was garbage-collected never comes back.
	for (p.tracker.returnable() > 0 || p.tracker.handingOut.Load() > 0 || db.Stats().InUse > p.lost()) && cause == nil {
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

func (p *pool) checkouts() []Checkout {
	snaps := p.tracker.outSnapshots(p.now())
	out := make([]Checkout, len(snaps))
	for i, s := range snaps {
		out[i] = p.describe(s)
	}
	return append(out, p.unseenCheckouts()...)
}

// lost counts the connections out that can never come back: their Rows
// was garbage-collected.
func (p *pool) lost() (n int) {
	p.tracker.each(func(c *connState) {
		if c.state == stateOut && !c.internal && c.gcLeaked {
			n++
		}
	})
	return n
}

// outCount counts the connections the tracker has seen checked out, the
// pool's own included: the part of DBStats.InUse it can explain.
func (p *pool) outCount() (n int) {
	p.tracker.each(func(c *connState) {
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
func (p *pool) unseenCheckouts() []Checkout {
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
	p.tracker.each(func(c *connState) {
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

func (p *pool) fillStats(s *PoolStats) {
	p.tracker.fillStats(s)
	s.Terminated = p.diagnosis.terminated.Load()
	s.Deadlocks = p.monitor.recent.count("deadlock")
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

// stillOut returns every connection still out, and the first time it is
// called for a pool reports each as LeakStillOut.
func (p *pool) stillOut() []Checkout {
	p.mu.Lock()
	issued := p.stillOutIssued
	p.stillOutIssued = true
	p.mu.Unlock()
	snaps := p.tracker.outSnapshots(p.now())
	out := make([]Checkout, len(snaps))
	for i, s := range snaps {
		out[i] = p.describe(s)
		if !issued && p.tracker.enqueue(report{kind: LeakStillOut, snap: s}) { // emitted by the monitor before close returns
			p.tracker.stillOutLeaks.Add(1)
		}
	}
	return out
}
