package livepage

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestNiceCeil(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{{0, 1}, {-3, 1}, {0.3, 0.5}, {1, 1}, {1.2, 2}, {3, 5}, {7, 10}, {40, 50}, {101, 200}} {
		assert.InDelta(t, tc.want, niceCeil(tc.in), 1e-9, "niceCeil(%v)", tc.in)
	}
}

// TestTickStep: at most six ticks over the span, on the coarsest step
// needed, and five minutes beyond half an hour.
func TestTickStep(t *testing.T) {
	for _, tc := range []struct{ span, want time.Duration }{
		{0, 10 * time.Second},
		{time.Minute, 10 * time.Second},
		{70 * time.Second, 15 * time.Second},
		{90 * time.Second, 15 * time.Second},
		{3 * time.Minute, 30 * time.Second},
		{5 * time.Minute, time.Minute},
		{15 * time.Minute, 3 * time.Minute},
		{30 * time.Minute, 5 * time.Minute},
		{2 * time.Hour, 5 * time.Minute},
	} {
		assert.Equal(t, tc.want, tickStep(tc.span), "tickStep(%v)", tc.span)
	}
}
