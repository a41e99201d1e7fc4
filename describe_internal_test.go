package pgxleak

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDescribeNoCulprit: a checkout without a recorded stack says why, and
// what to do about it; a described checkout carries the pool's name and
// times from the pool's clock.
func TestDescribeNoCulprit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		depth int
		every int64
		want  string
	}{
		{"capture off", 0, 1, "stack capture is off (WithStackDepth(0))"},
		{"not sampled", 32, 10, "this checkout was not sampled: WithStackSampling(10)"},
		{"none recorded", 32, 1, "no stack was recorded for this checkout"},
	} {
		cfg, err := newConfig([]Option{WithStackDepth(tc.depth), WithStackSampling(int(tc.every))})
		require.NoError(t, err)
		p := newPool(cfg, "described")
		t.Cleanup(p.close) // its telemetry too
		c := p.describe(snapshot{checkoutAt: int64(time.Second), held: int64(2 * time.Second), txStatus: txIdle})
		assert.Zero(t, c.Culprit, "%s: the culprit", tc.name)
		assert.True(t, strings.HasPrefix(c.NoCulprit, tc.want), "%s: reason %q, want %q", tc.name, c.NoCulprit, tc.want)
		assert.Equal(t, "described", c.Pool, "%s: the pool's name", tc.name)
		assert.Equal(t, 2*time.Second, c.Held, "%s: held", tc.name)
		assert.True(t, c.CheckedOutAt.Equal(p.epoch.Add(time.Second)), "%s: checked out at %v, want the pool's clock", tc.name, c.CheckedOutAt)
		assert.Equal(t, "idle", c.TxStatus, "%s: transaction status", tc.name)
	}
}
