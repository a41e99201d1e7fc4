package pgxleak

import (
	"fmt"
	"testing"
	"time"
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
	if len(got) != 4 {
		t.Fatalf("got %d entries, want 4 (suspected at a ×2, resolved at a, gc at b, wait): %+v", len(got), got)
	}
	if got[0].Kind != Exhausted || got[0].Checkout != nil || got[0].Headline == "" {
		t.Errorf("newest first: got %+v first, want the wait episode", got[0])
	}
	counts := map[string]int{}
	for _, e := range got {
		counts[e.Kind.String()+" "+e.At.Function] = e.Count
		if e.Kind != Exhausted && (e.Checkout == nil || e.Checkout.Culprit != e.At) {
			t.Errorf("%s entry without its checkout: %+v", e.Kind, e)
		}
	}
	want := map[string]int{"suspected app.a": 2, "resolved app.a": 1, "garbage_collected app.b": 1, "exhausted ": 1}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("counts %v, want %v", counts, want)
	}
	if r.count(LeakSuspected) != 2 || r.count(Deadlock) != 0 {
		t.Errorf("totals: suspected %d, deadlock %d", r.count(LeakSuspected), r.count(Deadlock))
	}
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
	if len(got) != maxRecent {
		t.Fatalf("%d entries, want %d", len(got), maxRecent)
	}
	if got[0].At.Line != maxRecent+10 || got[len(got)-1].At.Line != 11 {
		t.Errorf("kept lines %d..%d, want %d..11", got[0].At.Line, got[len(got)-1].At.Line, maxRecent+10)
	}
	if n := r.count(LeakSuspected); n != maxRecent+10 {
		t.Errorf("total %d, want %d", n, maxRecent+10)
	}
}
