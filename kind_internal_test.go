package pgxleak

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
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
		{Blocked, false, "blocked on another backend's lock", "connections blocked on another backend's lock"},
	} {
		assert.Equal(t, tc.phrase, tc.kind.phrase(), "%v.phrase()", tc.kind)
		assert.Equal(t, tc.plural, tc.kind.plural(), "%v.plural()", tc.kind)
		assert.Equal(t, tc.leak, tc.kind.Leak(), "%v.Leak()", tc.kind)
	}
	// Every kind there is has its words: a new kind must be added above.
	for k := LeakSuspected; !strings.HasPrefix(k.String(), "Kind("); k++ {
		assert.NotEqual(t, k.String(), k.phrase(), "kind %v has no phrase of its own", k)
		assert.NotEqual(t, k.String(), k.plural(), "kind %v has no plural of its own", k)
	}
}
