package pgxleak

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
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
	db          *sql.DB      // nil when opened by sql.Open("pgxleak", ...)
	fields      *sqlDBFields // where database/sql keeps its limits (see limits.go); tests replace it
	epoch       time.Time
	jitter      atomic.Bool // connections get a jittered end of life, and it applies (see jitterDue)
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
	p.fields = &dbFields
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
//
// The end of life is drawn from [lifetime−jitter, lifetime] from now, a
// little before database/sql's own clock starts (its driverConn.createdAt,
// set when Connect returns), so it never comes after database/sql's.
func (p *pool) register(c *connState) {
	if p.cfg.stackDepth > 0 {
		c.pcs = make([]uintptr, p.cfg.stackDepth)
	}
	if p.jitter.Load() {
		c.expiresAt = p.now() + int64(p.cfg.maxLifetime-rand.N(p.cfg.lifetimeJitter))
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

// closeConn records that database/sql closed a connection; if it was out,
// this is its return.
func (p *pool) closeConn(c *connState) {
	p.tracker.remove(c, p.now(), p.tel.useTimeRecorded())
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
	// VerifyTestMain fails the run for what is still out: it keeps their
	// lines, not the pool.
	var left []*leftover
	for _, s := range p.tracker.outSnapshots(p.now()) {
		l := &leftover{out: p.describe(s)}
		if l.out.OnPurpose == "" && s.conn.watchReturn(s.seq, &l.back) {
			left = append(left, l)
		}
	}
	if len(left) > 0 {
		openPools.keepLeftovers(left)
	}
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
		if !issued && out[i].OnPurpose == "" && p.tracker.enqueue(report{kind: LeakStillOut, snap: s}) { // emitted by the monitor before close returns
			p.tracker.stillOutLeaks.Add(1)
		}
	}
	return out
}
