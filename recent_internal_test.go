package pgxleak

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRecentReports(t *testing.T) {
	var r recentReports
	a := Frame{Function: "app.a", File: "/app/a.go", Line: 10}
	b := Frame{Function: "app.b", File: "/app/b.go", Line: 20}
	r.addLeak(Leak{Kind: LeakSuspected, Checkout: Checkout{Culprit: a}})
	r.addLeak(Leak{Kind: LeakSuspected, Checkout: Checkout{Culprit: a}})
	r.addLeak(Leak{Kind: Resolved, Checkout: Checkout{Culprit: a}})
	r.addLeak(Leak{Kind: LeakGarbageCollected, Checkout: Checkout{Culprit: b}})
	r.addEpisode(&episode{start: time.Now(), end: time.Now(), waits: 3, total: time.Second, peakInUse: 2, maxOpen: 2})

	got := r.list()
	require.Len(t, got, 4, "suspected at a ×2, resolved at a, gc at b, wait")
	assert.Equal(t, Exhausted, got[0].Kind, "newest first: the wait episode")
	assert.Nil(t, got[0].Checkout, "the wait episode has no checkout")
	assert.NotEmpty(t, got[0].Headline, "the wait episode's headline")
	counts := map[string]int{}
	for _, e := range got {
		counts[e.Kind.String()+" "+e.At.Function] = e.Count
		if e.Kind != Exhausted && assert.NotNil(t, e.Checkout, "%s entry without its checkout", e.Kind) {
			assert.Equal(t, e.At, e.Checkout.Culprit, "%s entry's checkout", e.Kind)
		}
	}
	assert.Equal(t, map[string]int{"suspected app.a": 2, "resolved app.a": 1, "garbage_collected app.b": 1, "exhausted ": 1}, counts)
	assert.EqualValues(t, 2, r.count(LeakSuspected), "suspected in total")
	assert.Zero(t, r.count(Deadlock), "deadlocks in total")
}

// TestRecentReportsBounded: beyond maxRecent places, the entry reported
// least recently goes; the totals keep counting.
func TestRecentReportsBounded(t *testing.T) {
	var r recentReports
	t0 := time.Now()
	for i := range maxRecent + 10 {
		f := Frame{Function: "app.f", File: "/app/f.go", Line: i + 1}
		r.add(LeakSuspected, f, "h", &Checkout{Culprit: f}, t0.Add(time.Duration(i)*time.Second))
	}
	got := r.list()
	require.Len(t, got, maxRecent)
	assert.Equal(t, maxRecent+10, got[0].At.Line, "the newest kept")
	assert.Equal(t, 11, got[len(got)-1].At.Line, "the oldest kept")
	assert.EqualValues(t, maxRecent+10, r.count(LeakSuspected), "the total counts the dropped ones")
}
