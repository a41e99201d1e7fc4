package pgxleak

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRegistryOpenPools: the registry lists the pools open.
func TestRegistryOpenPools(t *testing.T) {
	cfg, err := newConfig(nil)
	require.NoError(t, err)
	r := newPoolRegistry()
	open, closed := newPool(cfg, "open"), newPool(cfg, "closed")
	for _, p := range []*pool{open, closed} {
		t.Cleanup(p.close) // their telemetry too
	}
	r.add(open)
	r.add(closed)
	r.remove(closed)
	assert.Equal(t, []*pool{open}, r.list())
}

// TestRegistryLeftovers: a checkout still out at its pool's Close is
// listed until its connection comes back; keeping more forgets those that
// came back.
func TestRegistryLeftovers(t *testing.T) {
	r := newPoolRegistry()
	conns := make([]*connState, 3)
	var left []*leftover
	for i := range conns {
		conns[i] = &connState{state: stateOut, checkouts: 1}
		l := &leftover{out: Checkout{Pool: fmt.Sprint(i)}}
		require.True(t, conns[i].watchReturn(1, &l.back))
		left = append(left, l)
	}
	r.keepLeftovers(left)
	out, dropped := r.stillOut()
	assert.Len(t, out, 3)
	assert.Zero(t, dropped)

	tr := &tracker{conns: map[*connState]struct{}{conns[0]: {}}}
	tr.remove(conns[0], 1, false) // database/sql closes a connection that comes back to a closed pool
	out, _ = r.stillOut()
	assert.Equal(t, []Checkout{{Pool: "1"}, {Pool: "2"}}, out)

	r.keepLeftovers(nil)
	r.mu.Lock()
	assert.Len(t, r.leftovers, 2, "the one that came back is forgotten")
	r.mu.Unlock()

	returned := &connState{state: stateIdle, checkouts: 1}
	assert.False(t, returned.watchReturn(1, new(atomic.Bool)), "came back before its pool's Close was done")
	retaken := &connState{state: stateOut, checkouts: 2}
	assert.False(t, retaken.watchReturn(1, new(atomic.Bool)), "came back and taken again")
}

// TestRegistryLeftoversBounded: at most maxLeftovers lines are kept; the
// others are counted.
func TestRegistryLeftoversBounded(t *testing.T) {
	r := newPoolRegistry()
	for range maxLeftovers + 5 {
		r.keepLeftovers([]*leftover{{}})
	}
	out, dropped := r.stillOut()
	assert.Len(t, out, maxLeftovers)
	assert.Equal(t, 5, dropped)
}
