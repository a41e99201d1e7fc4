package pgxleak

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// pool is the state of one *sql.DB opened through pgxleak, in named parts,
// each owning its fields and its lock:
//
//   - tracker: the checkouts (the hot path): every connection's record,
//     the coarse clock, the counters, the report queue (leakcheck.go);
//   - monitor: the goroutine that emits queued reports, de-duplicates them,
//     writes summaries and feeds the OnLeak callback (monitor.go);
//   - diagnosis: holders, waiters, deadlocks and the server's view, off the
//     hot path (diagnosis.go).
//
// The pool itself owns what they share, set once before the monitor
// starts (cfg, db, epoch, tel, the internal context), and its lifecycle:
// mu guards name and the lifecycle flags. Lock order: pool.mu, then
// tracker.mu, then a connection's mu; the parts' other locks are leaves.
type pool struct {
	cfg         *config
	db          *sql.DB // nil when opened by sql.Open("pgxleak", ...)
	epoch       time.Time
	keeping     atomic.Bool // a keepMinIdle runs
	background  sync.WaitGroup
	internalCtx context.Context
	cancel      context.CancelFunc
	tel         *telemetry

	tracker   tracker
	monitor   monitor
	diagnosis diagnosis

	mu             sync.Mutex
	poolName       string // guarded by mu
	closed         bool   // guarded by mu
	started        bool   // guarded by mu; the monitor goroutine runs
	stillOutIssued bool   // guarded by mu; Drain reported the leftovers already
}

// tracker tracks the checkouts of one pool: the hot path writes here.
//
// Ownership: clock is set once. mu guards conns and closedCounts, and is
// taken before any connection's mu. queueMu guards the report queue, which
// the return path and garbage-collection cleanups append to and the monitor
// drains. The atomics are read and written on the hot path.
type tracker struct {
	clock      *coarseClock // the hot path's clock (see clockNow)
	draining   atomic.Bool
	handingOut atomic.Int64 // Connect calls under way; Drain waits for them (ResetSession: see there)

	mu           sync.Mutex
	conns        map[*connState]struct{} // guarded by mu
	closedCounts [2]uint64               // guarded by mu; checkouts, returns of connections already closed

	suspectedLeaks    atomic.Uint64
	resolvedLeaks     atomic.Uint64
	gcLeaks           atomic.Uint64
	stillOutLeaks     atomic.Uint64
	lifetimeDiscarded atomic.Uint64 // connections discarded at the end of their jittered lifetime

	queueMu     sync.Mutex
	queue       []report      // guarded by queueMu
	queueClosed bool          // guarded by queueMu; the final flush is done: nothing more is reported
	wake        chan struct{} // signals the monitor that the queue has reports
}

// monitor is the pool's reporting side: its goroutine (run) emits what the
// tracker queued and what its scans find.
//
// Ownership: stop and done are set once; done is closed by the monitor
// goroutine when it exits. reportMu guards the de-duplication state (seen,
// summaryDue); the callback's channels are set by startDelivery before the
// monitor starts; recent has its own lock.
type monitor struct {
	stop chan struct{}
	done chan struct{}

	reportMu   sync.Mutex
	seen       map[reportKey]*reportRate // guarded by reportMu
	summary    *time.Timer               // fires when suppressed reports are due a summary line
	summaryDue time.Time                 // guarded by reportMu; when summary fires; zero if stopped

	callbacks        chan Leak     // reports for the OnLeak callback; nil without one
	delivered        chan struct{} // closed when the callback's goroutine is done
	deliverGoroutine atomic.Uint64 // its ID, to recognise Close called from the callback
	lagging          atomic.Bool   // the callback's queue is full

	recent recentReports // the recent reports Inspect lists
}

func newPool(cfg *config, defaultName string) *pool {
	name := cfg.poolName
	if name == "" {
		name = defaultName
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &pool{
		cfg:         cfg,
		epoch:       time.Now(),
		internalCtx: ctx,
		cancel:      cancel,
		poolName:    name,
		tracker:     tracker{conns: make(map[*connState]struct{}), wake: make(chan struct{}, 1)},
		monitor: monitor{
			stop:    make(chan struct{}),
			done:    make(chan struct{}),
			seen:    make(map[reportKey]*reportRate),
			summary: time.NewTimer(time.Hour),
		},
	}
	p.monitor.summary.Stop()
	p.tracker.clock = newCoarseClock(p.epoch, coarseResolution(cfg.leakThreshold))
	p.tel = newTelemetry(p)
	return p
}

// now is the pool's monotonic clock, in nanoseconds since the pool opened.
func (p *pool) now() int64 { return int64(time.Since(p.epoch)) }

// clockNow is the pool time for checkouts and returns: the coarse clock,
// good to its resolution, unless the use-time metric is recorded, which
// needs the system clock's precision at both ends; timed says which.
func (p *pool) clockNow() (now int64, timed bool) {
	if p.tel.useTimeRecorded() {
		return p.now(), true
	}
	return p.tracker.clock.now(), false
}

func (p *pool) name() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.poolName
}

// logger returns the pool's logger; WithLogger(nil) discards.
func (p *pool) logger() *slog.Logger {
	if !p.cfg.loggerSet {
		return slog.Default()
	}
	if p.cfg.logger == nil {
		return discardLogger
	}
	return p.cfg.logger
}

var discardLogger = slog.New(slog.DiscardHandler)

// register starts tracking a freshly connected connection: its stack
// buffer, its jittered end of life, and, for a pool not named yet, the
// name its pgx configuration gives.
func (p *pool) register(c *connState) {
	if p.cfg.stackDepth > 0 {
		c.pcs = make([]uintptr, p.cfg.stackDepth)
	}
	if lt := p.cfg.maxLifetime; lt > 0 {
		life := lt
		if j := p.cfg.lifetimeJitter; j > 0 {
			life -= rand.N(j)
		}
		c.expiresAt = p.now() + int64(life)
	}
	if c.pgx != nil {
		p.mu.Lock()
		if p.poolName == "" {
			cfg := c.pgx.Config()
			p.poolName = fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
		}
		p.mu.Unlock()
		p.diagnosis.side.setConfig(c.pgx) // for the server's view, over a side connection
	}
	p.tracker.add(c)
}

// add starts tracking c.
func (t *tracker) add(c *connState) {
	t.mu.Lock()
	t.conns[c] = struct{}{}
	t.mu.Unlock()
}

// closeConn records that database/sql closed a connection; if it was out,
// this is its return.
func (p *pool) closeConn(c *connState) {
	p.tracker.remove(c, p.now(), p.tel.useTimeRecorded())
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
		c.state = stateClosed
		c.watch = nil // its cleanup's argument reaches c, and c reached it
		t.closedCounts[0] += c.checkouts
		t.closedCounts[1] += c.returns
		delete(t.conns, c)
	}
	c.mu.Unlock()
	t.mu.Unlock()
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

// returnable counts the connections out that may still come back: a
// connection whose Rows was garbage-collected never will.
func (t *tracker) returnable() (n int) {
	t.each(func(c *connState) {
		if c.state == stateOut && !c.internal && !c.gcLeaked {
			n++
		}
	})
	return n
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

// start registers the pool for VerifyTestMain and starts its monitor.
func (p *pool) start() {
	p.mu.Lock()
	p.started = true
	p.mu.Unlock()
	openPools.add(p)
	p.startDelivery()
	p.background.Go(func() { p.tracker.clock.run(p.monitor.stop) })
	go p.run()
}

// goBackground runs f on a goroutine that Close waits for, unless the
// pool is closing; it reports whether it did.
func (p *pool) goBackground(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.background.Go(f)
	return true
}

// run is the pool's monitor goroutine: it symbolises and emits reports,
// scans for connections held too long, keeps the minimum of idle
// connections and samples wait statistics.
func (p *pool) run() {
	defer close(p.monitor.done)
	var scan, keep, waits <-chan time.Time
	if t := p.cfg.leakThreshold; t > 0 {
		tk := time.NewTicker(min(max(t/4, 5*time.Millisecond), time.Second))
		defer tk.Stop()
		scan = tk.C
	}
	if p.cfg.minIdle > 0 && p.db != nil {
		tk := time.NewTicker(p.cfg.keepIdleEvery)
		defer tk.Stop()
		keep = tk.C
	}
	sideIdleTick := time.NewTicker(max(p.cfg.sideIdle/4, time.Millisecond)) // every pool, sql.Open's too
	defer sideIdleTick.Stop()
	if p.db != nil {
		p.tel.startWaitSampling()
		tk := time.NewTicker(p.cfg.waitInterval)
		defer tk.Stop()
		waits = tk.C
	}
	for {
		select {
		case <-p.monitor.stop:
			p.flushFinal()
			return
		case <-p.tracker.wake:
			p.flush()
		case <-scan:
			p.scan()
		case <-p.monitor.summary.C:
			p.summarize(false)
		case <-keep:
			// On its own goroutine, so that scans and reports never wait
			// behind a slow connect; one at a time.
			if p.keeping.CompareAndSwap(false, true) {
				p.background.Go(func() {
					defer p.keeping.Store(false)
					p.keepMinIdle(p.internalCtx)
				})
			}
		case <-sideIdleTick.C:
			p.diagnosis.side.closeIfIdle(p.cfg.sideIdle)
		case <-waits:
			p.tel.sampleWaitStats()
		}
	}
}

// close runs when the *sql.DB is closed, after database/sql closed the idle
// connections: what is still out now is reported as LeakStillOut.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	started := p.started
	p.mu.Unlock()
	p.cancel() // stops the keeper's checkouts
	p.stillOut()
	if started {
		close(p.monitor.stop)
		<-p.monitor.done // the monitor flushes the queue before it exits
		p.stopDelivery()
	} else {
		p.flushFinal()
	}
	p.background.Wait()
	p.diagnosis.side.close()
	p.tel.close()
	openPools.remove(p)
	if len(p.checkouts()) > 0 {
		openPools.keepLeftovers(p) // VerifyTestMain fails the run for them
	}
}

// openPools is the list of pools that VerifyTestMain checks: those open,
// and those closed with connections still out (a pool closed in a test's
// Cleanup reports its leftovers only as a log line, which go test hides).
var openPools = &poolRegistry{pools: make(map[*pool]struct{}), leftovers: make(map[*pool]struct{})}

type poolRegistry struct {
	mu        sync.Mutex
	pools     map[*pool]struct{}
	leftovers map[*pool]struct{} // closed with connections out
}

// keepLeftovers keeps a closed pool with connections still out. Pools whose
// connections have all come back since are dropped here, so that a program
// that opens and closes pools keeps only those still missing connections.
func (r *poolRegistry) keepLeftovers(p *pool) {
	r.mu.Lock()
	old := slices.Collect(maps.Keys(r.leftovers))
	r.mu.Unlock()
	var back []*pool
	for _, q := range old { // outside r.mu: checkouts takes the pool's locks
		if len(q.checkouts()) == 0 {
			back = append(back, q)
		}
	}
	r.mu.Lock()
	for _, q := range back {
		delete(r.leftovers, q)
	}
	r.leftovers[p] = struct{}{}
	r.mu.Unlock()
}

// withLeftovers lists the open pools and the closed ones kept by
// keepLeftovers.
func (r *poolRegistry) withLeftovers() []*pool {
	ps := r.list()
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := range r.leftovers {
		ps = append(ps, p)
	}
	return ps
}

func (r *poolRegistry) add(p *pool) {
	r.mu.Lock()
	r.pools[p] = struct{}{}
	r.mu.Unlock()
}

func (r *poolRegistry) remove(p *pool) {
	r.mu.Lock()
	delete(r.pools, p)
	r.mu.Unlock()
}

func (r *poolRegistry) list() []*pool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := make([]*pool, 0, len(r.pools))
	for p := range r.pools {
		ps = append(ps, p)
	}
	return ps
}
