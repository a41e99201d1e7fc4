package pgxleak

import (
	"maps"
	"slices"
	"sync"
)

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
