package pgxleak

import (
	"strings"
	"testing"
)

// TestLeakKindWords: every kind reads as words in a report and a summary
// line, never as its attribute value ("2 more deadlock").
func TestLeakKindWords(t *testing.T) {
	for _, tc := range []struct {
		kind           LeakKind
		resolved       bool
		phrase, plural string
	}{
		{LeakSuspected, false, "a suspected leak", "suspected leaks"},
		{LeakSuspected, true, "a suspected leak", "suspected leaks returned"},
		{LeakGarbageCollected, false, "a leaked connection (Rows garbage-collected)", "leaked connections (Rows garbage-collected without Close)"},
		{LeakStillOut, false, "still out", "still-out connections (at Drain or Close)"},
		{LeakDeadlock, false, "a deadlock (held while waiting for another)", "deadlocks (a connection held while waiting for another)"},
	} {
		if got := tc.kind.phrase(); got != tc.phrase {
			t.Errorf("%v.phrase() = %q, want %q", tc.kind, got, tc.phrase)
		}
		if got := tc.kind.plural(tc.resolved); got != tc.plural {
			t.Errorf("%v.plural(%v) = %q, want %q", tc.kind, tc.resolved, got, tc.plural)
		}
	}
	// Every kind there is has its words: a new kind must be added above.
	for k := LeakSuspected; !strings.HasPrefix(k.String(), "LeakKind("); k++ {
		if k.phrase() == k.String() || k.plural(false) == k.String() {
			t.Errorf("kind %v has no words of its own", k)
		}
	}
}
