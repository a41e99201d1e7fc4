package pgxleak

import (
	"testing"
	"time"
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
		if got := historyLen(tc.interval); got != tc.want {
			t.Errorf("historyLen(%v) = %d, want %d", tc.interval, got, tc.want)
		}
	}
}

func TestHistoryRing(t *testing.T) {
	var h history
	if got := h.samples(); len(got) != 0 {
		t.Fatalf("zero history has %d samples", len(got))
	}
	n := historyLen(5 * time.Minute) // 3
	for i := range n + 2 {
		h.add(Sample{Waits: int64(i)}, 5*time.Minute)
		got := h.samples()
		if want := min(i+1, n); len(got) != want {
			t.Fatalf("after %d adds: %d samples, want %d", i+1, len(got), want)
		}
		for j, s := range got { // oldest first, the newest last
			if want := int64(i - len(got) + 1 + j); s.Waits != want {
				t.Fatalf("after %d adds: sample %d is %d, want %d", i+1, j, s.Waits, want)
			}
		}
	}
	if len(h.ring) != n {
		t.Fatalf("ring grew to %d, want %d", len(h.ring), n)
	}
}
