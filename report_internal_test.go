package pgxleak

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
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
		assert.Equal(t, tc.phrase, tc.kind.phrase(), "%v.phrase()", tc.kind)
		assert.Equal(t, tc.plural, tc.kind.plural(tc.resolved), "%v.plural(%v)", tc.kind, tc.resolved)
	}
	// Every kind there is has its words: a new kind must be added above.
	for k := LeakSuspected; !strings.HasPrefix(k.String(), "LeakKind("); k++ {
		assert.NotEqual(t, k.String(), k.phrase(), "kind %v has no words of its own", k)
		assert.NotEqual(t, k.String(), k.plural(false), "kind %v has no words of its own", k)
	}
}
