package pgxleak

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestLeakVerdict: a report's headline leads with what happened and where,
// then what else is known, for every kind given to WithOnLeak.
func TestLeakVerdict(t *testing.T) {
	at := Frame{Function: "app.handler", File: "/src/app/handler.go", Line: 42}
	co := Checkout{Culprit: at, Held: 7200 * time.Millisecond}
	earlier := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name string
		l    Leak
		want []string // the clauses, in order
	}{
		{"suspected", Leak{Kind: LeakSuspected, Checkout: co},
			[]string{"suspected leak: connection checked out at app/handler.go:42 (app.handler), held 7.2s"}},
		{"resolved", Leak{Kind: Resolved, Checkout: co},
			[]string{"connection returned after 7.2s", "it was reported as a suspected leak: checked out at app/handler.go:42 (app.handler)"}},
		{"garbage-collected, suspected before", Leak{Kind: LeakGarbageCollected, Checkout: co, Earlier: LeakSuspected, EarlierAt: earlier},
			[]string{"leaked connection: Rows garbage-collected without Close", "connection checked out at app/handler.go:42 (app.handler), held 7.2s",
				"it never returns to the pool", "already reported as a suspected leak at 03:04:05"}},
		{"still out, repeated", Leak{Kind: LeakStillOut, Checkout: co, Repeats: 2},
			[]string{"connection checked out at app/handler.go:42 (app.handler), held 7.2s, still out when the pool was drained or closed (+2 more like it)"}},
		{"exited holder", Leak{Kind: LeakSuspected, Checkout: Checkout{Culprit: at, Held: time.Second, Holder: &Goroutine{ID: 7, Exited: true, MatchedBy: matchedByID}}},
			[]string{"suspected leak: connection checked out at app/handler.go:42 (app.handler), held 1s; goroutine exited"}},
	} {
		got := tc.l.verdict()
		if !assert.Len(t, got, len(tc.want), "%s: clauses %q, want %q", tc.name, got, tc.want) {
			continue
		}
		for i := range got {
			assert.True(t, strings.HasPrefix(got[i], tc.want[i]), "%s: clause %d = %q, want it to start %q", tc.name, i, got[i], tc.want[i])
		}
		assert.Equal(t, "pgxleak: "+strings.Join(got, "; "), tc.l.String(), "%s: String() is the clauses joined", tc.name)
	}
}
