package livepage

import (
	"runtime"
	"testing"
	"time"
	"weak"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
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

// TestSamplerLifecycle: a sampler samples its pool's Stats at the pool's
// interval, stops when the pool closes, and then keeps nothing of it.
func TestSamplerLifecycle(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithoutServerView())
	if err != nil {
		t.Fatal(err)
	}
	s := newSampler(db)
	s.setInterval(5 * time.Millisecond)
	if _, err := db.ExecContext(t.Context(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 10*time.Second, "3 samples, one checkout among them", func() bool {
		var n uint64
		for _, x := range s.samples() {
			n += x.Checkouts
		}
		return len(s.samples()) >= 3 && n >= 1
	})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.state.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the sampler still runs after its pool closed")
	}

	// Closed and dropped: nothing of the page keeps the pool reachable.
	w := weak.Make(db)
	db, s = nil, nil
	pgtest.WaitFor(t, 10*time.Second, "the closed pool collected", func() bool {
		runtime.GC()
		return w.Value() == nil
	})
}
