package pgxleak

import (
	"slices"
	"testing"
)

// TestRegistryLeftovers: the registry lists the open pools and the closed
// ones kept with connections out; keeping a new leftover drops those whose
// connections have all come back since.
func TestRegistryLeftovers(t *testing.T) {
	cfg, err := newConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &poolRegistry{pools: make(map[*pool]struct{}), leftovers: make(map[*pool]struct{})}
	open, back, kept := newPool(cfg, "open"), newPool(cfg, "back"), newPool(cfg, "kept")
	for _, p := range []*pool{open, back, kept} {
		t.Cleanup(p.close) // their telemetry too
	}
	r.add(open)
	r.add(back)
	r.remove(back)
	if got := r.list(); len(got) != 1 || got[0] != open {
		t.Fatalf("list = %v, want the open pool only", got)
	}
	r.keepLeftovers(back) // closed with connections out: kept
	if got := r.withLeftovers(); len(got) != 2 || !slices.Contains(got, back) {
		t.Fatalf("withLeftovers = %v, want the open pool and the leftover", got)
	}
	r.keepLeftovers(kept) // back has no checkout any more: dropped
	if got := r.withLeftovers(); len(got) != 2 || slices.Contains(got, back) || !slices.Contains(got, kept) {
		t.Fatalf("withLeftovers = %v, want the open pool and the latest leftover", got)
	}
}
