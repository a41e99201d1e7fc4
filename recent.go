package pgxleak

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// maxRecent caps the entries of a pool's recent reports: reports of the
// same kind at the same line share one entry, and when a new one does not
// fit, the entry reported least recently goes.
const maxRecent = 50

// Report is one entry of a pool's recent reports, as the live page shows
// them: every report of the same kind at the same line is one entry, with
// its count, including the repeats that the report interval suppressed
// from the log.
type Report struct {
	Kind     Kind      `json:"kind"`
	Headline string    `json:"headline"`           // the latest report's first line
	At       Frame     `json:"at"`                 // the culprit; zero for wait episodes
	Count    int       `json:"count"`              // reports of this kind at this line since the pool opened (while the entry was kept)
	First    time.Time `json:"first"`              // the first of them
	Last     time.Time `json:"last"`               // the latest of them
	Checkout *Checkout `json:"checkout,omitempty"` // the latest leak's checkout; nil for wait episodes
}

type recentKey struct {
	kind Kind
	at   Frame
}

// recentReports is a pool's bounded list of recent reports. The zero value
// is ready. It is written where reports are emitted, on the monitor
// goroutine, and read by the live page.
type recentReports struct {
	mu      sync.Mutex
	entries map[recentKey]*Report // guarded by mu
	totals  map[Kind]uint64       // guarded by mu; reports about a checkout, per kind, since the pool opened
}

// addLeak records a leak report (before de-duplication, so that the count
// includes the suppressed ones).
func (r *recentReports) addLeak(l Leak) {
	c := l.Checkout
	r.add(l.Kind, c.Culprit, l.String(), &c, time.Now())
}

func (r *recentReports) add(kind Kind, at Frame, headline string, c *Checkout, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.entries == nil {
		r.entries = make(map[recentKey]*Report)
		r.totals = make(map[Kind]uint64)
	}
	if c != nil {
		r.totals[kind]++
	}
	k := recentKey{kind, at}
	e := r.entries[k]
	if e == nil {
		if len(r.entries) >= maxRecent {
			var oldest recentKey
			var t time.Time
			for k, e := range r.entries {
				if t.IsZero() || e.Last.Before(t) {
					oldest, t = k, e.Last
				}
			}
			delete(r.entries, oldest)
		}
		e = &Report{Kind: kind, At: at, First: now}
		r.entries[k] = e
	}
	e.Count++
	e.Headline, e.Last, e.Checkout = headline, now, c
}

// list returns the entries, most recently reported first.
func (r *recentReports) list() []Report {
	r.mu.Lock()
	out := make([]Report, 0, len(r.entries))
	for _, e := range r.entries {
		out = append(out, *e)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Report) int {
		return cmp.Or(b.Last.Compare(a.Last), cmp.Compare(a.Kind, b.Kind))
	})
	return out
}

// count returns the reports of kind about a checkout since the pool opened.
func (r *recentReports) count(kind Kind) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.totals[kind]
}
