package pgxleak

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestJudge: each verdict from the numbers that make it, with its
// reasoning, and the precedence between them.
func TestJudge(t *testing.T) {
	at := func(line int) Frame { return Frame{Function: "app.handle", File: "/src/app/handler.go", Line: line} }
	leak := Checkout{Culprit: at(42), Held: 40 * time.Second, Suspected: true, Server: &ServerActivity{State: "idle in transaction"}}
	exited := Checkout{Culprit: at(50), Held: time.Second, Holder: &Goroutine{Exited: true}}
	slowQuery := Checkout{Culprit: at(60), Held: 40 * time.Second, Suspected: true, Server: &ServerActivity{State: "active"}}
	lockWait := Checkout{Culprit: at(70), Held: 2 * time.Second, BackendPID: 11,
		Server: &ServerActivity{State: "active", WaitEventType: "Lock", WaitEvent: "transactionid", BlockedBy: []uint32{4121}}}
	lockWaitInPool := lockWait
	lockWaitInPool.Server = &ServerActivity{State: "active", WaitEventType: "Lock", BlockedBy: []uint32{12}, Culprits: map[uint32]Frame{12: at(80)}}
	busy := loadRates{seconds: 30, returns: 600, held: 60 * time.Second, waits: 900, waitTime: 24 * time.Second, timeouts: 600}
	calm := loadRates{seconds: 30, returns: 300, held: 3 * time.Second}
	server := serverShare{known: true, available: 97, headroom: 9, clients: 40, instances: 4}

	for _, tc := range []struct {
		name   string
		in     judgeInput
		kind   string
		reason []string // substrings
		needed float64
	}{
		{"healthy", judgeInput{maxOpen: 4, inUse: 1, load: calm, slowWait: 100 * time.Millisecond}, "healthy",
			[]string{"needs ≈ 0.1 connections", "10.0 checkouts/s × 10ms mean use", "the pool has 4"}, 0.1},
		{"healthy, no load yet", judgeInput{maxOpen: 4, slowWait: 100 * time.Millisecond}, "healthy", []string{"no load measured yet"}, 0},
		{"a few short waits are not undersized", judgeInput{maxOpen: 4, load: loadRates{seconds: 30, returns: 300, held: 3 * time.Second, waits: 3, waitTime: 30 * time.Millisecond}, slowWait: 100 * time.Millisecond}, "healthy", nil, 0.1},
		{"undersized", judgeInput{maxOpen: 2, inUse: 2, load: busy, pending: 3, slowWait: 100 * time.Millisecond, server: server}, "undersized",
			// (600 returns + 600 timeouts) / 30s = 40/s; 60s/600 = 100ms: 4 connections.
			[]string{"by Little's law the load needs ≈ 4.0 connections (40.0 checkouts/s × 100ms mean use), the pool has 2",
				"callers waited 0.80s per second, 600 timed out, 3 waiting now",
				"the server allows 22 per instance (97 available − 9 headroom, 4 instances)"}, 4},
		{"undersized beyond the server's share", judgeInput{maxOpen: 2, load: busy, slowWait: 100 * time.Millisecond,
			server: serverShare{known: true, available: 20, headroom: 3, instances: 8}}, "undersized",
			[]string{"allows 2 per instance", "more than it can give"}, 4},
		{"undersized with nothing returned", judgeInput{maxOpen: 2, load: loadRates{seconds: 5, waits: 10, waitTime: 5 * time.Second}, pending: 10, slowWait: 100 * time.Millisecond}, "undersized",
			[]string{"no use time is measured yet"}, 0},
		{"leaking", judgeInput{maxOpen: 2, inUse: 2, load: busy, pending: 3, checkouts: []Checkout{leak, leak}, slowWait: 100 * time.Millisecond}, "leaking",
			[]string{"2 of 2 connections held by leaks at app/handler.go:42 (idle in transaction) ×2", "3 callers waiting"}, 4},
		{"an exited holder is a leak before the threshold", judgeInput{maxOpen: 4, checkouts: []Checkout{exited}}, "leaking",
			[]string{"app/handler.go:50 (goroutine exited)"}, 0},
		{"a slow query is not a leak", judgeInput{maxOpen: 4, checkouts: []Checkout{slowQuery}, load: calm, slowWait: 100 * time.Millisecond}, "healthy", nil, 0.1},
		{"blocked", judgeInput{maxOpen: 2, inUse: 2, load: busy, pending: 5, checkouts: []Checkout{lockWait, lockWait}, slowWait: 100 * time.Millisecond}, "blocked",
			[]string{"blocked on the server: 2 of 2 connections wait on locks held by PID 4121 (not this pool) ×2"}, 4},
		{"blocked by a checkout of the pool", judgeInput{maxOpen: 2, pending: 1, checkouts: []Checkout{lockWaitInPool}}, "blocked",
			[]string{"PID 12 at app/handler.go:80"}, 0},
		{"a brief lock wait with nobody waiting is not blocked", judgeInput{maxOpen: 4, checkouts: []Checkout{lockWait}, load: calm, slowWait: 100 * time.Millisecond}, "healthy", nil, 0.1},
		{"leaking before blocked", judgeInput{maxOpen: 2, pending: 1, checkouts: []Checkout{leak, lockWait}}, "leaking", nil, 0},
		{"deadlocked first", judgeInput{maxOpen: 1, pending: 1, checkouts: []Checkout{leak},
			waiters: []Goroutine{{At: at(90), Holds: []Checkout{{Culprit: at(91)}}}}}, "deadlocked",
			[]string{"1 goroutine waits for a connection while holding one of the same pool (waiting at app/handler.go:90 holding app/handler.go:91)"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := judge(tc.in)
			assert.Equal(t, tc.kind, v.Kind, v.Reason)
			assert.True(t, strings.HasPrefix(v.Reason, strings.SplitN(tc.kind, " ", 2)[0]) || tc.kind == "blocked", v.Reason)
			for _, s := range tc.reason {
				assert.Contains(t, v.Reason, s)
			}
			assert.InDelta(t, tc.needed, v.Needed, 0.01)
		})
	}
}
