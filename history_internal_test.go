package pgxleak

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHistoryLen(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		want     int
	}{
		{time.Second, 900},           // the default: 15 minutes exactly
		{2 * time.Second, 450},       // longer intervals: fewer points, same span
		{7 * time.Second, 129},       // rounded up
		{10 * time.Millisecond, 900}, // capped: covers 9 s only
		{time.Hour, 2},
		{0, 900},
	} {
		assert.Equal(t, tc.want, historyLen(tc.interval), "historyLen(%v)", tc.interval)
	}
}

func TestHistoryRing(t *testing.T) {
	var h history
	require.Empty(t, h.samples(), "the zero history")
	n := historyLen(5 * time.Minute) // 3
	for i := range n + 2 {
		h.add(Sample{Waits: int64(i)}, 5*time.Minute)
		got := h.samples()
		require.Len(t, got, min(i+1, n), "after %d adds", i+1)
		for j, s := range got { // oldest first, the newest last
			require.Equal(t, int64(i-len(got)+1+j), s.Waits, "after %d adds: sample %d", i+1, j)
		}
	}
	require.Len(t, h.ring, n, "the ring grew")
}
