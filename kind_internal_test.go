package pgxleak

import (
	"strings"
	"testing"
)

// TestKindWords: every kind reads as words in a report and a summary
// line, never as its attribute value ("2 more deadlock").
func TestKindWords(t *testing.T) {
	for _, tc := range []struct {
		kind           Kind
		leak           bool
		phrase, plural string
	}{
		{LeakSuspected, true, "a suspected leak", "suspected leaks"},
		{Resolved, false, "a suspected leak that came back", "suspected leaks returned"},
		{LeakGarbageCollected, true, "a leaked connection (Rows garbage-collected)", "leaked connections (Rows garbage-collected without Close)"},
		{LeakStillOut, true, "still out", "still-out connections (at Drain or Close)"},
		{Deadlock, false, "a deadlock (held while waiting for another)", "deadlocks (a connection held while waiting for another)"},
		{Exhausted, false, "an exhausted pool (callers waiting)", "waits on an exhausted pool"},
	} {
		if got := tc.kind.phrase(); got != tc.phrase {
			t.Errorf("%v.phrase() = %q, want %q", tc.kind, got, tc.phrase)
		}
		if got := tc.kind.plural(); got != tc.plural {
			t.Errorf("%v.plural() = %q, want %q", tc.kind, got, tc.plural)
		}
		if got := tc.kind.isLeak(); got != tc.leak {
			t.Errorf("%v.isLeak() = %v, want %v", tc.kind, got, tc.leak)
		}
	}
	// Every kind there is has its words: a new kind must be added above.
	for k := LeakSuspected; !strings.HasPrefix(k.String(), "Kind("); k++ {
		if k.phrase() == k.String() || k.plural() == k.String() {
			t.Errorf("kind %v has no words of its own", k)
		}
	}
}
