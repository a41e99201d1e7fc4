package pgxleak

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRegistryLeftovers: the registry lists the open pools and the closed
// ones kept with connections out; keeping a new leftover drops those whose
// connections have all come back since.
func TestRegistryLeftovers(t *testing.T) {
	cfg, err := newConfig(nil)
	require.NoError(t, err)
	r := &poolRegistry{pools: make(map[*pool]struct{}), leftovers: make(map[*pool]struct{})}
	open, back, kept := newPool(cfg, "open"), newPool(cfg, "back"), newPool(cfg, "kept")
	for _, p := range []*pool{open, back, kept} {
		t.Cleanup(p.close) // their telemetry too
	}
	r.add(open)
	r.add(back)
	r.remove(back)
	require.Equal(t, []*pool{open}, r.list(), "the open pool only")
	r.keepLeftovers(back) // closed with connections out: kept
	require.ElementsMatch(t, []*pool{open, back}, r.withLeftovers(), "the open pool and the leftover")
	r.keepLeftovers(kept) // back has no checkout any more: dropped
	assert.ElementsMatch(t, []*pool{open, kept}, r.withLeftovers(), "the open pool and the latest leftover")
}
