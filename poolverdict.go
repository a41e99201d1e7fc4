package pgxleak

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// The pool's verdict (judge.go) kept current by the monitor: one sample
// of the load per second, the last 30 seconds of them, and the server's
// limits read now and then.

// verdictWindow is how many one-second samples the load rates cover.
const verdictWindow = 31

// limitsEvery is how often the server's limits and the instances of this
// service and pool are read: once a minute over an idle connection of the
// pool while it has room to open another (never a connection of its own,
// which across 2,000 instances would be 2,000 more), and every 10 seconds while callers wait, over the side
// connection the diagnosis holds then anyway.
const (
	limitsEvery        = time.Minute
	limitsEveryWaiting = 10 * time.Second
)

// verdictState is the pool's verdict, kept by the diagnosis part.
type verdictState struct {
	current atomic.Pointer[poolVerdict]
	limits  atomic.Pointer[serverShare]
	reading atomic.Bool // a read of the limits is under way

	mu       sync.Mutex // guards the window, for Inspect; written by the monitor
	window   []loadSample
	lastStep time.Time
	limitsAt time.Time // monitor only: when the limits were last asked for
}

// loadSample is the pool's cumulative counters at one moment.
type loadSample struct {
	at       time.Time
	returns  uint64
	held     time.Duration
	waits    int64
	waitTime time.Duration
	timeouts int64
	pending  int64
}

// rates returns the load between the window's first and last samples.
func (v *verdictState) rates() loadRates {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.window) < 2 {
		return loadRates{}
	}
	a, b := v.window[0], v.window[len(v.window)-1]
	return loadRates{
		seconds:  b.at.Sub(a.at).Seconds(),
		returns:  b.returns - a.returns,
		held:     b.held - a.held,
		waits:    b.waits - a.waits,
		waitTime: b.waitTime - a.waitTime,
		timeouts: b.timeouts - a.timeouts,
		queued:   b.pending - a.pending,
	}
}

// loadTotals returns the user checkouts returned so far and their use
// time in all.
func (t *tracker) loadTotals() (returns uint64, held time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	returns, held = t.closedCounts[1], time.Duration(t.closedHeld)
	for c := range t.conns {
		c.mu.Lock()
		returns += c.returns
		held += time.Duration(c.heldTotal)
		c.mu.Unlock()
	}
	return returns, held
}

// sampleVerdict runs on the monitor goroutine at every wait sample, after
// the wait sampler: once a second it adds a load sample and judges the
// pool.
func (p *pool) sampleVerdict() {
	if p.db == nil {
		return
	}
	v := &p.diagnosis.verdict
	now := time.Now()
	if now.Sub(v.lastStep) < time.Second-p.cfg.waitInterval/2 {
		return
	}
	v.lastStep = now
	st := p.db.Stats()
	returns, held := p.tracker.loadTotals()
	s := loadSample{at: now, returns: returns, held: held, waits: st.WaitCount, waitTime: st.WaitDuration,
		timeouts: p.tel.pend.timeouts.Load(), pending: p.tel.pend.pending.Load()}
	v.mu.Lock()
	v.window = append(v.window, s)
	if len(v.window) > verdictWindow {
		v.window = v.window[len(v.window)-verdictWindow:]
	}
	v.mu.Unlock()

	waiting := s.pending > 0 || (st.MaxOpenConnections > 0 && st.InUse >= st.MaxOpenConnections)
	p.maybeReadLimits(now, st, waiting)

	// The checkouts to judge: the latest diagnosis's, with holders, waiters
	// and the server's view, when the wait sampler took one just now;
	// otherwise only the suspected ones, with the server's cached view.
	var cs []Checkout
	var ws []Goroutine
	p.diagnosis.diagMu.Lock()
	d := p.diagnosis.last
	p.diagnosis.diagMu.Unlock()
	if d != nil && now.Sub(d.at) < 2*time.Second {
		cs, ws = d.checkouts, d.waiters
	} else {
		for _, sn := range p.tracker.outSnapshots(p.now()) {
			if sn.suspected || sn.gcLeaked {
				cs = append(cs, p.describe(sn))
			}
		}
		if len(cs) > 0 {
			p.serverView(context.Background(), cs, false)
		}
	}
	verdict := p.judgeWith(cs, ws, st.InUse, st.MaxOpenConnections)
	v.current.Store(&verdict)
}

// judgeWith judges the pool from checkouts and waiters and the monitor's
// load window.
func (p *pool) judgeWith(cs []Checkout, ws []Goroutine, inUse, maxOpen int) poolVerdict {
	in := judgeInput{
		maxOpen:   maxOpen,
		inUse:     inUse,
		load:      p.diagnosis.verdict.rates(),
		pending:   p.tel.pend.pending.Load(),
		slowWait:  p.cfg.slowWaitThreshold,
		checkouts: cs,
		waiters:   ws,
	}
	if in.slowWait <= 0 {
		in.slowWait = defaultSlowWaitThreshold
	}
	if l := p.diagnosis.verdict.limits.Load(); l != nil {
		in.server = *l
	}
	return judge(in)
}

// maybeReadLimits reads the server's limits in the background when they
// are due (see limitsEvery).
func (p *pool) maybeReadLimits(now time.Time, st sql.DBStats, waiting bool) {
	v := &p.diagnosis.verdict
	every := limitsEvery
	if waiting {
		every = limitsEveryWaiting
	}
	if !p.cfg.serverView || p.cfg.pgBouncer || !p.diagnosis.side.configured() || (!v.limitsAt.IsZero() && now.Sub(v.limitsAt) < every) {
		return // off, or no pgx connection seen yet: not known to be PostgreSQL's
	}
	if !waiting && (st.Idle == 0 || (st.MaxOpenConnections > 0 && st.OpenConnections >= st.MaxOpenConnections)) {
		// Only an idle connection no caller can miss is borrowed: with room
		// left to open another, a caller arriving meanwhile never waits
		// (with a full pool it would: WaitCount would grow, and a pool of
		// one would serialise behind pgxleak's query). Next time.
		return
	}
	if !v.reading.CompareAndSwap(false, true) {
		return
	}
	v.limitsAt = now
	pattern := p.instancesPattern()
	if !p.goBackground(func() {
		defer v.reading.Store(false)
		ctx, cancel := context.WithTimeout(p.internalCtx, serverTimeout)
		defer cancel()
		var l serverShare
		var maxConns, reserved int
		var err error
		scan := func(row interface{ Scan(...any) error }) error {
			return row.Scan(&maxConns, &reserved, &l.clients, &l.instances)
		}
		if waiting {
			err = p.diagnosis.side.do(ctx, func(ctx context.Context, c *pgx.Conn) error {
				return scan(c.QueryRow(ctx, limitsInstancesQuery, pattern))
			})
		} else {
			err = scan(p.db.QueryRowContext(&internalContext{ctx}, limitsInstancesQuery, pattern))
		}
		if err != nil {
			return // the verdict goes on without the server's numbers
		}
		l.available = maxConns - reserved
		l.headroom = max(3, l.available/10) // as CheckCapacity's
		l.instances = max(l.instances, 1)
		l.known = true
		v.limits.Store(&l)
	}) {
		v.reading.Store(false)
	}
}

// limitsInstancesQuery reads max_connections, the reserved connections,
// the client backends, and the instances of this service and pool: the
// distinct application_names matching $1.
const limitsInstancesQuery = `SELECT
	current_setting('max_connections')::int,
	current_setting('superuser_reserved_connections')::int
	  + coalesce(current_setting('reserved_connections', true)::int, 0),
	(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int,
	(SELECT count(DISTINCT application_name) FROM pg_stat_activity
	  WHERE backend_type = 'client backend' AND application_name LIKE $1)::int`

// instancesPattern is the LIKE pattern of the application_names of this
// service and pool, every instance: "service/%/pool" when the sessions
// have pgxleak's default name, else their own name exactly.
func (p *pool) instancesPattern() string {
	app := p.diagnosis.side.applicationName()
	id := processIdentity()
	if app != "" && app != id.applicationName(p.cfg.poolName) {
		return likeEscape(app)
	}
	pattern := likeEscape(id.service) + "/%"
	if p.cfg.poolName != "" {
		pattern += "/" + likeEscape(p.cfg.poolName)
	}
	return pattern
}

// likeEscape escapes LIKE's wildcards and its escape character.
func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
