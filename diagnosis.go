package pgxleak

import (
	"context"
	"database/sql"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgxleak/pgxleak/internal/gdump"
)

// diagnosis is a tracker's stuck-pool diagnosis: the rate-limited
// goroutine dump, the side connection to the server with its cached view,
// and what has been reported already. Everything here runs off the hot
// path, when a report is made, the pool is inspected, or the wait sampler
// saw callers waiting.
type diagnosis struct {
	dumps      gdump.Limiter
	side       sideConn
	limits     serverLimits  // the server's limits and fleet (serverview.go)
	verdict    verdictState  // the pool's verdict (poolverdict.go)
	terminated atomic.Uint64 // backends terminated (Terminate, Drain)
	refreshing atomic.Bool   // a background read of the server view is under way

	diagMu sync.Mutex // one diagnosis at a time; later callers share it
	last   *findings  // guarded by diagMu

	// The checkouts out just before the latest fresh dump began, by
	// connection and checkout number; guarded by diagMu. Only a checkout
	// out before the dump and still the same checkout after it was out
	// throughout the dump, so only those are joined with it: times cannot
	// decide this, since the hot path's clock may lag under load.
	outBeforeDump map[*connState]uint64
	dumpOf        *gdump.Snapshot // the dump outBeforeDump belongs to

	mu             sync.Mutex         // guards the report state below
	deadlocks      map[holderKey]bool // checkouts reported as deadlocked
	poolDeadlocked bool               // the whole pool's deadlock was logged and has not ended
	warnedStall    time.Time          // the stall whose exhaustion was logged
	lastWarn       time.Time          // the last exhaustion warning
	skipped        int                // exhaustion warnings suppressed since

	waits waitsNow // the waits in progress, as the wait sampler's dumps saw them
}

// waitsNow is the waits in progress: database/sql adds a wait to
// DBStats.WaitDuration only when it ends, so a stuck pool's waits are
// invisible there. The wait sampler joins its goroutine dumps: each waiter
// counts from the first dump that saw it waiting, and keeps that start
// across the next dump only if the two dumps saw one wait: between them
// (DBStats read before the first and after the second) no wait started
// or none ended, so no waiter can have been served and queued again. The
// runtime's own whole minutes (Goroutine.Waiting) count too. Each start
// is therefore a lower bound: a waiter may have waited up to the gap
// between two dumps longer (the sampling interval or the dump interval,
// whichever is longer), or more when waits kept both starting and ending
// (a busy pool: then it counts from the later dump, until the runtime's
// minutes take over). A waiter served since the latest dump is counted
// until the next one, one sampling interval later.
type waitsNow struct {
	mu       sync.Mutex
	since    map[uint64]time.Time // guarded by mu; each waiter's start, by goroutine ID
	dump     *gdump.Snapshot      // guarded by mu; the latest dump joined
	prior    statsReading         // guarded by mu; DBStats read before it was taken
	hasPrior bool                 // guarded by mu; prior is known
	readings []statsReading       // the sampler's only: its recent DBStats, oldest first
}

// statsReading is one DBStats read by the wait sampler, and when.
type statsReading struct {
	at       time.Time
	count    int64
	duration time.Duration
}

// read records the sampler's DBStats read at at. It keeps those of the
// last two dump intervals, and one older: a dump the sampler joins is at
// most one dump interval old.
func (w *waitsNow) read(at time.Time, st sql.DBStats) {
	w.readings = append(w.readings, statsReading{at, st.WaitCount, st.WaitDuration})
	horizon := at.Add(-2 * dumpInterval)
	i := 0
	for i+1 < len(w.readings) && w.readings[i+1].at.Before(horizon) {
		i++
	}
	w.readings = slices.Delete(w.readings, 0, i)
}

// before returns the latest reading made before t.
func (w *waitsNow) before(t time.Time) (statsReading, bool) {
	for i := len(w.readings) - 1; i >= 0; i-- {
		if w.readings[i].at.Before(t) {
			return w.readings[i], true
		}
	}
	return statsReading{}, false
}

// join records the waiters of d, a diagnosis the sampler took (or was
// given from the cache); after is DBStats read after d's dump. A dump
// already joined changes nothing.
func (w *waitsNow) join(d *findings, after sql.DBStats) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if d.dump == nil || d.dump == w.dump {
		return
	}
	b := w.prior
	continuous := w.dump != nil && w.hasPrior && (after.WaitCount == b.count || after.WaitDuration == b.duration)
	w.prior, w.hasPrior = w.before(d.dump.Started)
	taken := d.dump.Taken
	since := make(map[uint64]time.Time, len(d.waiters))
	for _, g := range d.waiters {
		s := taken
		if prev, ok := w.since[g.ID]; ok && continuous {
			s = prev
		}
		if g.Waiting > 0 {
			s = minTime(s, taken.Add(-g.Waiting))
		}
		since[g.ID] = s
	}
	w.since, w.dump = since, d.dump
}

// clear forgets the waiters: the sampler saw none could be waiting.
func (w *waitsNow) clear() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.since, w.dump = nil, nil
}

// any reports whether the latest dump saw waiters.
func (w *waitsNow) any() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.since) > 0
}

// now returns how many wait, and the longest wait at now (a lower bound).
func (w *waitsNow) now(now time.Time) (waiting int, longest time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.since {
		longest = max(longest, now.Sub(s))
	}
	return len(w.since), longest
}

// waited returns how long goroutine id has waited at now, at least; 0 if
// the sampler has not seen it waiting.
func (w *waitsNow) waited(now time.Time, id uint64) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s, ok := w.since[id]; ok {
		return now.Sub(s)
	}
	return 0
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// findings is one goroutine dump, and possibly one server view, joined
// with the checkouts and the waiters of the pool.
type findings struct {
	at        time.Time
	dump      *gdump.Snapshot
	server    bool // the server view was asked for
	checkouts []Checkout
	keys      []holderKey // parallel to checkouts
	waiters   []Goroutine
	notes     []string
}

// checkout returns the diagnosed checkout for key, if the diagnosis has it.
func (d *findings) checkout(k holderKey) (Checkout, bool) {
	i := slices.Index(d.keys, k)
	if i < 0 {
		return Checkout{}, false
	}
	return d.checkouts[i], true
}

// diagnose returns the pool's diagnosis, taking a new one unless the last
// one is recent enough (the dump interval), has the server view if asked,
// and covers every checkout in want. It never waits for the server: the
// server view is the cached one (see serverView).
func (p *pool) diagnose(ctx context.Context, server bool, want ...holderKey) *findings {
	st := &p.diagnosis
	st.diagMu.Lock()
	defer st.diagMu.Unlock()
	// A checkout the last diagnosis has is covered even without a holder
	// (a truncated dump, an unsampled checkout): while its dump is the one
	// the limiter would give again, a new diagnosis would learn nothing
	// more, and would describe every checkout out once per report.
	if d := st.last; d != nil && d.dump != nil && time.Since(d.dump.Taken) < st.dumps.Interval && (d.server || !server) {
		covered := true
		for _, k := range want {
			if !slices.Contains(d.keys, k) {
				covered = false
			}
		}
		if covered {
			return d
		}
	}
	d := p.diagnoseNow(ctx, server)
	st.last = d
	return d
}

// diagnoseNow takes a diagnosis; with server, the cached server view.
func (p *pool) diagnoseNow(ctx context.Context, server bool) *findings {
	if p.diagnosis.dumps.Interval == 0 {
		p.diagnosis.dumps.Interval = dumpInterval // before the first Take, under diagMu
	}
	before := p.outSeqs()
	ringAt, ringEpoch := p.tel.pend.position()
	var waitCount int64
	if p.db != nil {
		waitCount = p.db.Stats().WaitCount
	}
	dump, fresh := p.diagnosis.dumps.Take()
	if fresh {
		p.diagnosis.outBeforeDump, p.diagnosis.dumpOf = before, dump
	}
	var outBefore map[*connState]uint64
	if p.diagnosis.dumpOf == dump {
		outBefore = p.diagnosis.outBeforeDump
	}
	d := &findings{at: time.Now(), dump: dump, server: server}
	snaps := p.tracker.outSnapshots(p.now())
	var notes noteSet
	for _, s := range snaps {
		c := p.describe(s)
		var h *Goroutine
		note := newerThanDump
		if seq, ok := outBefore[s.conn]; ok && seq == s.seq {
			h, note = p.holderOf(s, c, dump)
		}
		c.Holder = h
		notes.add(note)
		d.checkouts = append(d.checkouts, c)
		d.keys = append(d.keys, holderKey{s.conn, s.checkoutAt})
	}
	d.waiters = p.waitersIn(dump, d.checkouts, &notes)
	p.tracker.waits.record(dump, d.waiters)
	if fresh && p.db != nil {
		p.tel.pend.countDump(dump, ringAt, ringEpoch, waitCount, waiterIDs(d.waiters))
	}
	if server {
		notes.add(p.serverView(ctx, d.checkouts, false))
	}
	d.notes = notes
	return d
}

// newerThanDump is the note for checkouts the dump cannot speak for.
const newerThanDump = "some checkouts are newer than the goroutine dump (taken at most once a second); their holders are not shown"

// outSeqs returns the checkout number of every user checkout out now.
func (p *pool) outSeqs() map[*connState]uint64 {
	m := make(map[*connState]uint64)
	p.tracker.each(func(c *connState) {
		if c.state == stateOut && !c.internal {
			m[c] = c.checkouts
		}
	})
	return m
}

// waitersIn returns the goroutines of dump waiting for a connection of
// this pool, each with the checkouts of this pool it holds.
func (p *pool) waitersIn(dump *gdump.Snapshot, cs []Checkout, notes *noteSet) []Goroutine {
	var ws []Goroutine
	unknown := 0
	for i := range dump.Goroutines {
		g := &dump.Goroutines[i]
		if !g.WaitingForConn() {
			continue
		}
		if p.db == nil {
			unknown++
			continue
		}
		if _, ok := g.WaitingDB(); !ok {
			unknown++
			continue
		}
		if !g.WaitingOn(p.db) {
			continue
		}
		w := Goroutine{ID: g.ID, Waiting: g.Wait, Stack: dumpFrames(g.Frames)}
		w.At, _ = p.userFrame(g)
		for _, c := range cs {
			if c.Holder != nil && !c.Holder.Exited && c.Holder.ID == g.ID {
				w.Holds = append(w.Holds, c)
			}
		}
		ws = append(ws, w)
	}
	if unknown > 0 {
		if p.db == nil {
			notes.add("waiters not shown: a pool opened by sql.Open(\"pgxleak\", ...) cannot tell its waiters from other pools' (use pgxleak.Open)")
		} else {
			notes.add("some goroutines wait for a connection of a pool the goroutine dump does not name; they are not counted")
		}
	}
	return ws
}

// noteSet collects distinct notes, in order.
type noteSet []string

func (n *noteSet) add(s string) {
	if s != "" && !slices.Contains(*n, s) {
		*n = append(*n, s)
	}
}

// annotate fills a report's Holder and Server from a diagnosis, for the
// reports a person reads to find a stuck pool: suspected and still-out
// leaks. It takes a goroutine dump (rate-limited) and uses the server's
// cached view: a report never waits for the server.
func (p *pool) annotate(l *Leak, r report) {
	if r.stuck != nil {
		l.Holder, l.Server, l.WaitingAt, l.PoolDeadlocked = r.stuck.holder, r.stuck.server, r.stuck.waitingAt, r.stuck.poolDeadlocked
		return
	}
	if r.returned {
		l.Server = r.server
		return
	}
	if l.Kind != LeakSuspected && l.Kind != LeakStillOut && l.Kind != Blocked {
		return
	}
	k := holderKey{r.snap.conn, r.snap.checkoutAt}
	d := p.diagnose(context.Background(), p.cfg.serverView, k)
	if c, ok := d.checkout(k); ok {
		l.Holder, l.Server = c.Holder, c.Server
	}
	l.Notes = d.notes
}

// diagnoseFresh is diagnose for Inspect: the checkouts as they are now,
// with the dump and the server view from their caches when recent. The
// server is asked outside diagMu, so that the monitor's reports never wait
// for it behind an Inspect.
func (p *pool) diagnoseFresh(ctx context.Context) *findings {
	st := &p.diagnosis
	st.diagMu.Lock()
	d := p.diagnoseNow(ctx, false)
	st.last = d
	st.diagMu.Unlock()
	if !p.cfg.serverView {
		return d
	}
	f := *d
	f.checkouts = slices.Clone(d.checkouts)
	notes := noteSet(slices.Clone(d.notes))
	notes.add(p.serverView(ctx, f.checkouts, true))
	f.notes = notes
	f.server = true
	st.diagMu.Lock()
	if st.last == d {
		st.last = &f
	}
	st.diagMu.Unlock()
	return &f
}

// poolDeadlocked reports whether the pool is full (maxOpen > 0) and every
// holder waits for a connection of the same pool.
func (d *findings) poolDeadlocked(maxOpen int) bool {
	if maxOpen <= 0 || len(d.checkouts) < maxOpen {
		return false
	}
	for _, c := range d.checkouts {
		if c.Holder == nil || c.Holder.Exited || !slices.ContainsFunc(d.waiters, func(w Goroutine) bool { return w.ID == c.Holder.ID }) {
			return false
		}
	}
	return true
}

type holderKey struct {
	c          *connState
	checkoutAt int64
}
