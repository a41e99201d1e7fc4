package pgxleak

import (
	"strings"
	"testing"
	"time"
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
		if err != nil {
			t.Fatal(err)
		}
		p := newPool(cfg, "described")
		t.Cleanup(p.close) // its telemetry too
		c := p.describe(snapshot{checkoutAt: int64(time.Second), held: int64(2 * time.Second), txStatus: txIdle})
		if c.Culprit != (Frame{}) || !strings.HasPrefix(c.NoCulprit, tc.want) {
			t.Errorf("%s: culprit %v, reason %q; want %q", tc.name, c.Culprit, c.NoCulprit, tc.want)
		}
		if c.Pool != "described" || c.Held != 2*time.Second || !c.CheckedOutAt.Equal(p.epoch.Add(time.Second)) || c.TxStatus != "idle" {
			t.Errorf("%s: described as %+v", tc.name, c)
		}
	}
}
