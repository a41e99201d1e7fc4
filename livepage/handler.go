// Package livepage serves pgxleak's live page: every pool's connections,
// holders, waiters, recent reports, settings and server limits, with plots
// of the last 15 minutes. It stands beside package pgxleak as net/http/pprof
// stands beside runtime/pprof, and reads only what pgxleak's public API
// gives every user ([pgxleak.Inspect], [pgxleak.Stats]).
//
// Mount it yourself, behind your service's authentication:
//
//	mux.Handle("/debug/pgxleak/", requireAdmin(livepage.Handler(db)))
package livepage

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/pgxleak/pgxleak"
)

// maxRows caps the holders and the waiter lines a pool's section shows,
// and the checkouts and waiters in its JSON, so that a page costs
// milliseconds however many connections are out; the counts of the rest
// are given. [pgxleak.Inspect] returns them all.
const maxRows = 200

// Page is the live page's data, and the JSON that Handler serves at
// ?format=json. Its field names are stable.
type Page struct {
	TakenAt time.Time  `json:"taken_at"`
	Pools   []PoolPage `json:"pools"` // by pool name
}

// PoolPage is one pool's section of the live page: its [pgxleak.Inspection]
// (settings, recent reports and the server's limits included) and its
// history. The checkouts (longest held first) and waiters are capped at
// 200 each; the counts of those left out are given.
type PoolPage struct {
	pgxleak.Inspection
	CheckoutsNotShown int           `json:"checkouts_not_shown"`
	WaitersNotShown   int           `json:"waiters_not_shown"`
	SampleInterval    time.Duration `json:"sample_interval_ns"` // between History samples
	History           []Sample      `json:"history"`            // oldest first, the last 15 minutes (at most 900 samples)
}

// Handler returns the live page of the given pools, opened through
// pgxleak. It is never mounted by default; mount it yourself, behind your
// service's authentication, as you would net/http/pprof:
//
//	mux.Handle("/debug/pgxleak/", requireAdmin(livepage.Handler(db)))
//
// The page has one section per pool: plots of the last 15 minutes
// (connections, waits, wait time, checkouts per second, leaks), the
// connections held now with their holders, the goroutines waiting for a
// connection (deadlocks first), the recent reports, the pool's settings
// and the server's limits and fleet. It refreshes itself every few
// seconds when JavaScript is on. ?format=json serves the same data as a
// [Page]. Only GET and HEAD are answered. A closed pool is left out.
//
// The plots' history is sampled from [pgxleak.Stats] from the moment
// Handler is called, at the pool's wait-sampling interval; each sampler
// stops when its pool closes, and keeps no pool reachable.
//
// The page shows code locations, statement text (never bound arguments)
// and backend PIDs, but no credentials: still, do not expose it publicly.
// Each request inspects every pool (see [pgxleak.Inspect]), so it costs a
// few milliseconds per pool.
func Handler(dbs ...*sql.DB) http.Handler {
	h := &handler{}
	for _, db := range dbs {
		if db == nil || slices.ContainsFunc(h.pools, func(s *sampler) bool { return s.db == db }) {
			continue
		}
		h.pools = append(h.pools, newSampler(db))
	}
	return h
}

type handler struct {
	pools []*sampler // one per pool given, in order
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

// page inspects every pool concurrently, leaving out the closed ones, and
// sorts them by name.
func (h *handler) page(ctx context.Context) Page {
	page := Page{TakenAt: time.Now()}
	pools := make([]*PoolPage, len(h.pools))
	var wg sync.WaitGroup
	for i, s := range h.pools {
		wg.Go(func() { pools[i] = s.poolPage(ctx, page.TakenAt) })
	}
	wg.Wait()
	for _, pp := range pools {
		if pp != nil {
			page.Pools = append(page.Pools, *pp)
		}
	}
	slices.SortStableFunc(page.Pools, func(a, b PoolPage) int { return cmp.Compare(a.Pool, b.Pool) })
	return page
}

// poolPage inspects one pool; nil if it is closed.
func (s *sampler) poolPage(ctx context.Context, now time.Time) *PoolPage {
	in, err := pgxleak.Inspect(ctx, s.db)
	if errors.Is(err, pgxleak.ErrNotTracked) {
		return &PoolPage{Inspection: pgxleak.Inspection{
			Pool: "(a pool not opened through pgxleak)", TakenAt: now, Notes: []string{err.Error()},
		}}
	}
	if err != nil || in.Stats.Closed {
		return nil
	}
	s.setInterval(in.Settings.WaitSampleInterval)
	pp := &PoolPage{Inspection: in, SampleInterval: in.Settings.WaitSampleInterval, History: s.samples()}
	pp.capRows()
	return pp
}

// capRows keeps the first maxRows checkouts (the longest held) and
// waiters (the deadlocked first), and counts the others.
func (pp *PoolPage) capRows() {
	if n := len(pp.Checkouts); n > maxRows {
		pp.Checkouts, pp.CheckoutsNotShown = pp.Checkouts[:maxRows], n-maxRows
	}
	if n := len(pp.Waiters); n > maxRows {
		slices.SortStableFunc(pp.Waiters, func(a, b pgxleak.Goroutine) int {
			return cmp.Compare(min(len(b.Holds), 1), min(len(a.Holds), 1))
		})
		pp.Waiters, pp.WaitersNotShown = pp.Waiters[:maxRows], n-maxRows
	}
}
