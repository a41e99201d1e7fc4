package pgxleak

import (
	"slices"
	"sync"
	"sync/atomic"
)

// openPools is what VerifyTestMain checks: the pools open, and the
// checkouts still out when their pools closed (a pool closed in a test's
// Cleanup reports its leftovers only as a log line, which go test hides).
var openPools = newPoolRegistry()

// maxLeftovers bounds the leftovers kept: a program that closes pool after
// pool with connections out keeps at most this many lines (a few KB each,
// with their stacks), and counts the others.
const maxLeftovers = 100

// poolRegistry holds the open pools, and of a closed pool only the lines
// of its checkouts still out at Close, so that a closed pool costs no
// memory once its connections are gone.
type poolRegistry struct {
	mu        sync.Mutex
	pools     map[*pool]struct{} // guarded by mu
	leftovers []*leftover        // guarded by mu; oldest first
	dropped   int                // guarded by mu; leftovers not kept, past maxLeftovers
}

func newPoolRegistry() *poolRegistry {
	return &poolRegistry{pools: make(map[*pool]struct{})}
}

// leftover is a checkout still out when its pool closed: its description
// then, and whether it has come back since, which its connection records
// (connState.cameBack). A connection collected without coming back never
// will.
type leftover struct {
	out  Checkout
	back atomic.Bool
}

// keepLeftovers keeps the checkouts of a closed pool still out, and drops
// the leftovers that have come back since.
func (r *poolRegistry) keepLeftovers(ls []*leftover) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.leftovers = slices.DeleteFunc(r.leftovers, func(l *leftover) bool { return l.back.Load() })
	n := min(len(ls), max(maxLeftovers-len(r.leftovers), 0))
	r.leftovers = append(r.leftovers, ls[:n]...)
	r.dropped += len(ls) - n
}

// stillOut returns the leftovers that have not come back, and how many
// more were not kept.
func (r *poolRegistry) stillOut() ([]Checkout, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Checkout
	for _, l := range r.leftovers {
		if !l.back.Load() {
			out = append(out, l.out)
		}
	}
	return out, r.dropped
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
