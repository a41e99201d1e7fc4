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

// tracker is the state of one pool: one *sql.DB opened through pgxleak.
// It registers each connection's state (connState), runs the monitor
// goroutine, and is listed in the registry of open pools while open.
//
// Ownership: cfg, db (written before the monitor starts), epoch, tel and
// the channels are set once. mu guards conns, poolName and the lifecycle
// flags, and is taken before any connection's mu. queueMu guards the
// report queue; reportMu the de-duplication state. The atomics are read on
// the hot path.
type tracker struct {
	cfg         *config
	db          *sql.DB // nil when opened by sql.Open("pgxleak", ...)
	epoch       time.Time
	clock       *coarseClock // the hot path's clock (see clockNow)
	draining    atomic.Bool
	handingOut  atomic.Int64 // Connect calls under way; Drain waits for them (ResetSession: see there)
	keeping     atomic.Bool  // a keepMinIdle runs
	background  sync.WaitGroup
	internalCtx context.Context
	cancel      context.CancelFunc
	tel         *telemetry

	mu             sync.Mutex
	conns          map[*connState]struct{}
	poolName       string
	closedCounts   [2]uint64 // checkouts, returns of connections already closed
	closedHeld     int64     // their use time, in ns
	closed         bool
	started        bool // the monitor goroutine runs
	stillOutIssued bool // Drain reported the leftovers already

	suspectedLeaks atomic.Uint64
	resolvedLeaks  atomic.Uint64
	gcLeaks        atomic.Uint64
	stillOutLeaks  atomic.Uint64

	lifetimeDiscarded atomic.Uint64 // connections discarded at the end of their jittered lifetime

	queueMu sync.Mutex
	queue   []report
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}

	queueClosed bool // guarded by queueMu; the final flush is done: nothing more is reported

	reportMu   sync.Mutex
	seen       map[reportKey]*reportRate
	summary    *time.Timer // fires when suppressed reports are due a summary line
	summaryDue time.Time   // guarded by reportMu; when summary fires; zero if stopped

	callbacks        chan Leak     // reports for the OnLeak callback; nil without one
	delivered        chan struct{} // closed when the callback's goroutine is done
	deliverGoroutine atomic.Uint64 // its ID, to recognise Close called from the callback
	lagging          atomic.Bool   // the callback's queue is full

	history history       // the live page's plots
	recent  recentReports // the live page's recent reports
	stuck   stuckState    // goroutine dumps, the server's view, deadlocks (see stuck.go)
	judged  verdictState  // the pool's verdict (poolverdict.go)
}

func newTracker(cfg *config, defaultName string) *tracker {
	name := cfg.poolName
	if name == "" {
		name = defaultName
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &tracker{
		cfg:         cfg,
		epoch:       time.Now(),
		internalCtx: ctx,
		cancel:      cancel,
		conns:       make(map[*connState]struct{}),
		poolName:    name,
		wake:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		seen:        make(map[reportKey]*reportRate),
		summary:     time.NewTimer(time.Hour),
	}
	p.summary.Stop()
	p.clock = newCoarseClock(p.epoch, coarseResolution(cfg.leakThreshold))
	p.tel = newTelemetry(p)
	return p
}

// now is the pool's monotonic clock, in nanoseconds since the pool opened.
func (p *tracker) now() int64 { return int64(time.Since(p.epoch)) }

// clockNow is the pool time for checkouts and returns: the coarse clock,
// good to its resolution, unless the use-time metric is recorded, which
// needs the system clock's precision at both ends; timed says which.
func (p *tracker) clockNow() (now int64, timed bool) {
	if p.tel.useTimeRecorded() {
		return p.now(), true
	}
	return p.clock.now(), false
}

func (p *tracker) name() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.poolName
}

// logger returns the pool's logger; WithLogger(nil) discards.
func (p *tracker) logger() *slog.Logger {
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
func (p *tracker) register(c *connState) {
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
	p.mu.Lock()
	p.conns[c] = struct{}{}
	if c.pgx != nil && p.stuck.side.cfg == nil {
		p.stuck.side.setConfig(c.pgx) // for the server's view, over a side connection
	}
	if p.poolName == "" && c.pgx != nil {
		cfg := c.pgx.Config()
		p.poolName = fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
	}
	p.mu.Unlock()
}

// closeConn records that database/sql closed a connection; if it was out,
// this is its return.
func (p *tracker) closeConn(c *connState) {
	now, timed := p.now(), p.tel.useTimeRecorded()
	p.mu.Lock()
	c.mu.Lock()
	if c.state == stateOut {
		c.returnLocked(now, timed)
	}
	if c.state != stateClosed {
		c.state = stateClosed
		c.watch = nil // its cleanup's argument reaches c, and c reached it
		p.closedCounts[0] += c.checkouts
		p.closedCounts[1] += c.returns
		p.closedHeld += c.heldTotal
		delete(p.conns, c)
	}
	c.mu.Unlock()
	p.mu.Unlock()
}

// each calls f for every open connection, under p.mu and the connection's
// lock, in no particular order.
func (p *tracker) each(f func(c *connState)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.mu.Lock()
		f(c)
		c.mu.Unlock()
	}
}

// returnable counts the connections out that may still come back: a
// connection whose Rows was garbage-collected never will.
func (p *tracker) returnable() (n int) {
	p.each(func(c *connState) {
		if c.state == stateOut && !c.internal && !c.gcLeaked {
			n++
		}
	})
	return n
}

func (p *tracker) outSnapshots() []snapshot {
	now := p.now()
	var out []snapshot
	p.each(func(c *connState) {
		if c.state == stateOut && !c.internal {
			out = append(out, c.snapshotLocked(now))
		}
	})
	slices.SortFunc(out, func(a, b snapshot) int { return cmp.Compare(a.checkoutAt, b.checkoutAt) })
	return out
}

// start registers the pool for VerifyTestMain and starts its monitor.
func (p *tracker) start() {
	p.mu.Lock()
	p.started = true
	p.mu.Unlock()
	openPools.add(p)
	p.startDelivery()
	p.background.Go(func() { p.clock.run(p.stop) })
	go p.run()
}

// goBackground runs f on a goroutine that Close waits for, unless the
// pool is closing; it reports whether it did.
func (p *tracker) goBackground(f func()) bool {
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
func (p *tracker) run() {
	defer close(p.done)
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
		case <-p.stop:
			p.flushFinal()
			return
		case <-p.wake:
			p.flush()
		case <-scan:
			p.scan()
		case <-p.summary.C:
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
			p.stuck.side.closeIfIdle(p.cfg.sideIdle)
		case <-waits:
			p.tel.sampleWaitStats()
			p.sampleHistory()
			p.sampleVerdict()
		}
	}
}

// close runs when the *sql.DB is closed, after database/sql closed the idle
// connections: what is still out now is reported as LeakStillOut.
func (p *tracker) close() {
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
		close(p.stop)
		<-p.done // the monitor flushes the queue before it exits
		p.stopDelivery()
	} else {
		p.flushFinal()
	}
	p.background.Wait()
	p.stuck.side.close()
	p.tel.close()
	openPools.remove(p)
	if len(p.checkouts()) > 0 {
		openPools.keepLeftovers(p) // VerifyTestMain fails the run for them
	}
}

// openPools is the list of pools that VerifyTestMain checks: those open,
// and those closed with connections still out (a pool closed in a test's
// Cleanup reports its leftovers only as a log line, which go test hides).
var openPools = &poolRegistry{pools: make(map[*tracker]struct{}), leftovers: make(map[*tracker]struct{})}

type poolRegistry struct {
	mu        sync.Mutex
	pools     map[*tracker]struct{}
	leftovers map[*tracker]struct{} // closed with connections out
}

// keepLeftovers keeps a closed pool with connections still out. Pools whose
// connections have all come back since are dropped here, so that a program
// that opens and closes pools keeps only those still missing connections.
func (r *poolRegistry) keepLeftovers(p *tracker) {
	r.mu.Lock()
	old := slices.Collect(maps.Keys(r.leftovers))
	r.mu.Unlock()
	var back []*tracker
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
func (r *poolRegistry) withLeftovers() []*tracker {
	ps := r.list()
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := range r.leftovers {
		ps = append(ps, p)
	}
	return ps
}

func (r *poolRegistry) add(p *tracker) {
	r.mu.Lock()
	r.pools[p] = struct{}{}
	r.mu.Unlock()
}

func (r *poolRegistry) remove(p *tracker) {
	r.mu.Lock()
	delete(r.pools, p)
	r.mu.Unlock()
}

func (r *poolRegistry) list() []*tracker {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := make([]*tracker, 0, len(r.pools))
	for p := range r.pools {
		ps = append(ps, p)
	}
	return ps
}
