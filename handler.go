package pgxleak

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"
)

// maxRows caps the holders and the waiter lines a pool's section shows,
// and the checkouts and waiters in its JSON, so that a page costs
// milliseconds however many connections are out; the counts of the rest
// are given. [Inspect] returns them all.
const maxRows = 200

// Server views are read at most every serverViewEvery per pool, within
// serverViewTimeout; a page waits at most serverViewWait for one, and
// otherwise shows the previous read or says the view is unavailable.
const (
	serverViewEvery   = 5 * time.Second
	serverViewTimeout = 3 * time.Second
	serverViewWait    = 500 * time.Millisecond
)

// Page is the live page's data, and the JSON that Handler serves at
// ?format=json. Its field names are stable.
type Page struct {
	TakenAt time.Time  `json:"taken_at"`
	Pools   []PoolPage `json:"pools"` // by pool name
}

// PoolPage is one pool's section of the live page. The Inspection's
// checkouts (longest held first) and waiters are capped at 200 each; the
// counts of those left out are given.
type PoolPage struct {
	Inspection
	CheckoutsNotShown int           `json:"checkouts_not_shown"`
	WaitersNotShown   int           `json:"waiters_not_shown"`
	SampleInterval    time.Duration `json:"sample_interval_ns"` // between History samples
	History           []Sample      `json:"history"`            // oldest first, the last 15 minutes (at most 900 samples)
	Reports           []Report      `json:"reports"`            // recent reports, most recent first (at most 50 entries)
	Settings          Settings      `json:"settings"`
	Server            ServerView    `json:"server"` // the server's limits and fleet
}

// Settings are a pool's effective settings, defaults resolved. The pool
// limits (MaxOpen to ConnMaxIdleTime) are the ones in force, read back
// from database/sql: a db.SetMaxIdleConns, SetMaxOpenConns,
// SetConnMaxLifetime or SetConnMaxIdleTime after Open shows here.
type Settings struct {
	// Tuned is false for a pool opened by sql.Open("pgxleak", dsn): the
	// pool limits below (MaxOpen to MaxUses) are then pgxleak's defaults,
	// not applied, and database/sql's own limits apply; the leak-detection
	// settings apply either way.
	Tuned   bool `json:"tuned"`
	MaxOpen int  `json:"max_open"` // 0 means unlimited
	MaxIdle int  `json:"max_idle"`
	// MinIdle is the number of idle connections kept: WithMinIdleConns,
	// but no more than MaxIdle.
	MinIdle         int           `json:"min_idle"`
	ConnMaxLifetime time.Duration `json:"conn_max_lifetime_ns"` // 0 means forever
	// ConnMaxLifetimeJitter is 0 once db.SetConnMaxLifetime has replaced
	// the lifetime Open set (see WithConnMaxLifetimeJitter).
	ConnMaxLifetimeJitter time.Duration `json:"conn_max_lifetime_jitter_ns"`
	ConnMaxIdleTime       time.Duration `json:"conn_max_idle_time_ns"` // 0 means forever
	// LimitsFromOpen is true when this Go's database/sql could not be
	// read back: MaxIdle, ConnMaxLifetime and ConnMaxIdleTime are then the
	// values Open set, and a later setter call does not show. (MaxOpen is
	// always the one in force, from db.Stats().)
	LimitsFromOpen     bool          `json:"limits_from_open,omitempty"`
	MaxUses            int64         `json:"max_uses"`          // 0 means unlimited
	LeakThreshold      time.Duration `json:"leak_threshold_ns"` // 0 means off
	SlowWaitThreshold  time.Duration `json:"slow_wait_threshold_ns"`
	WaitSampleInterval time.Duration `json:"wait_sample_interval_ns"`
	ReportInterval     time.Duration `json:"report_interval_ns"`
	StackDepth         int           `json:"stack_depth"`
	StackSampling      int64         `json:"stack_sampling"`
	Statements         bool          `json:"statements"`
	GCDetection        bool          `json:"gc_detection"`
	PgBouncer          bool          `json:"pgbouncer"`
	// ServerView is false under WithoutServerView: reports and the page do
	// not read pg_stat_activity.
	ServerView bool `json:"server_view"`
	// IdleInTransactionTimeout is the idle_in_transaction_session_timeout
	// set on the pool's sessions; 0 means the server's own.
	IdleInTransactionTimeout time.Duration `json:"idle_in_transaction_timeout_ns"`
}

// Handler returns the live page of the given pools, or, with no
// arguments, of every pool opened through pgxleak and not yet closed in the
// process (those opened later too). It is never mounted by default; mount
// it yourself, behind your service's authentication, as you would
// net/http/pprof:
//
//	mux.Handle("/debug/pgxleak/", requireAdmin(pgxleak.Handler()))
//
// The page has one section per pool: plots of the last 15 minutes
// (connections, waits, wait time, checkouts per second, leaks), the
// connections held now with their holders, the goroutines waiting for a
// connection (deadlocks first), the recent reports, the pool's settings
// and the server's limits and fleet. It refreshes itself every few
// seconds when JavaScript is on. ?format=json serves the same data as a
// [Page]. Only GET and HEAD are answered.
//
// The page shows code locations, statement text (never bound arguments)
// and backend PIDs, but no credentials: still, do not expose it publicly.
// Each request inspects every pool (see [Inspect]), so it costs a few
// milliseconds per pool; the server's view is read at most every 5 seconds
// per pool, over a side connection, and never holds the page up for more
// than half a second.
func Handler(dbs ...*sql.DB) http.Handler {
	return &handler{dbs: dbs, views: make(map[*tracker]*serverViewCache)}
}

type handler struct {
	dbs []*sql.DB // nil: every open pool

	mu    sync.Mutex
	views map[*tracker]*serverViewCache // guarded by mu
}

// serverViewCache is one pool's last server view and the read under way.
type serverViewCache struct {
	mu      sync.Mutex
	view    ServerView    // guarded by mu
	readAt  time.Time     // guarded by mu; when the last read started
	reading chan struct{} // guarded by mu; closed when the read under way ends; nil if none
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "pgxleak: method not allowed", http.StatusMethodNotAllowed)
		return
	}
	page := h.page(r.Context())
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	q := r.URL.Query()
	if q.Get("format") == "json" {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(page)
		return
	}
	nonce := newNonce()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy",
		"default-src 'none'; style-src 'nonce-"+nonce+"'; script-src 'nonce-"+nonce+"'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	if q.Get("fragment") == "pools" {
		_ = renderPools(w, page)
		return
	}
	_ = renderPage(w, page, nonce)
}

func newNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// trackers returns the pools to show, sorted by name.
func (h *handler) trackers() []*tracker {
	var ps []*tracker
	if len(h.dbs) == 0 {
		ps = openPools.list()
	} else {
		for _, db := range h.dbs {
			if p := trackerOf(db); p != nil && !slices.Contains(ps, p) {
				ps = append(ps, p)
			}
		}
	}
	slices.SortStableFunc(ps, func(a, b *tracker) int { return cmp.Compare(a.name(), b.name()) })
	return ps
}

// page inspects every pool, and reads the server views, concurrently.
func (h *handler) page(ctx context.Context) Page {
	ps := h.trackers()
	page := Page{TakenAt: time.Now(), Pools: make([]PoolPage, len(ps))}
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() { page.Pools[i] = h.poolPage(ctx, p) })
	}
	wg.Wait()
	for _, db := range h.dbs {
		if trackerOf(db) == nil {
			page.Pools = append(page.Pools, PoolPage{Inspection: Inspection{
				Pool: "(a pool not opened through pgxleak)", TakenAt: page.TakenAt,
				Notes: []string{ErrNotTracked.Error()},
			}})
		}
	}
	h.prune(ps)
	return page
}

func (h *handler) poolPage(ctx context.Context, p *tracker) PoolPage {
	view := make(chan ServerView, 1)
	go func() { view <- h.serverView(ctx, p) }()
	pp := PoolPage{
		Inspection:     p.inspect(ctx),
		SampleInterval: p.cfg.waitInterval,
		History:        p.history.samples(),
		Reports:        p.recent.list(),
		Settings:       p.settings(),
	}
	pp.capRows()
	pp.Server = <-view
	return pp
}

// capRows keeps the first maxRows checkouts (the longest held) and
// waiters (the deadlocked first), and counts the others.
func (pp *PoolPage) capRows() {
	if n := len(pp.Checkouts); n > maxRows {
		pp.Checkouts, pp.CheckoutsNotShown = pp.Checkouts[:maxRows], n-maxRows
	}
	if n := len(pp.Waiters); n > maxRows {
		slices.SortStableFunc(pp.Waiters, func(a, b Waiter) int {
			return cmp.Compare(min(len(b.Holds), 1), min(len(a.Holds), 1))
		})
		pp.Waiters, pp.WaitersNotShown = pp.Waiters[:maxRows], n-maxRows
	}
}

func (p *tracker) settings() Settings {
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
		l := p.limits()
		s.MaxOpen, s.MaxIdle, s.MinIdle = l.maxOpen, l.maxIdle, p.minIdle(l)
		s.ConnMaxLifetime, s.ConnMaxIdleTime = l.maxLifetime, l.maxIdleTime
		if !p.jitter.Load() {
			s.ConnMaxLifetimeJitter = 0
		}
		s.LimitsFromOpen = !l.read
	}
	return s
}

// serverView returns p's server view: the cached one if it is recent,
// otherwise a fresh read if it comes within serverViewWait, otherwise the
// previous one, marked unavailable. The read goes on in the background
// and the next page gets it.
func (h *handler) serverView(ctx context.Context, p *tracker) ServerView {
	h.mu.Lock()
	c := h.views[p]
	if c == nil {
		c = &serverViewCache{}
		h.views[p] = c
	}
	h.mu.Unlock()

	c.mu.Lock()
	if c.reading == nil && time.Since(c.readAt) >= serverViewEvery {
		c.readAt = time.Now()
		done := make(chan struct{})
		c.reading = done
		read := func() {
			// The pool's Close waits for it, and cancels it.
			rctx, cancel := context.WithTimeout(p.internalCtx, serverViewTimeout)
			defer cancel()
			v, err := p.readServerView(rctx)
			c.mu.Lock()
			if err != nil {
				c.view.Unavailable = "unavailable: " + err.Error()
			} else {
				c.view = v
			}
			c.reading = nil
			c.mu.Unlock()
			close(done)
		}
		if !p.goBackground(read) {
			c.view.Unavailable = "unavailable: the pool is closed"
			c.reading = nil
		}
	}
	reading := c.reading
	c.mu.Unlock()
	if reading != nil {
		t := time.NewTimer(serverViewWait)
		defer t.Stop()
		select {
		case <-reading:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.view
	if c.reading != nil && v.ReadAt.IsZero() && v.Unavailable == "" {
		v.Unavailable = "unavailable: the server did not answer within " + serverViewWait.String() + " (the page will show it when it does)"
	}
	return v
}

// prune forgets the server views of pools no longer shown.
func (h *handler) prune(shown []*tracker) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for p := range h.views {
		if !slices.Contains(shown, p) {
			delete(h.views, p)
		}
	}
}
