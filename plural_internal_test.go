package pgxleak

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// onePlural matches a count of one before a plural noun ("1 connections",
// "1 more suspected leaks"), and wrongSingular a count other than one
// before a singular noun ("2 connection ", "0 goroutine waiting").
var (
	onePlural     = regexp.MustCompile(`(^|[^0-9./])1 (more )?[a-z-]*(connections|goroutines|waits|checkouts|returns|leaks|instances|backends|deadlocks|reports)\b`)
	wrongSingular = regexp.MustCompile(`(^|[^0-9./])([02]) (more )?[a-z-]*(connection|goroutine|wait|checkout|return|leak|instance|backend|deadlock)\b[^s]`)
)

// TestCountsAgree: every message with a count reads right for 0, 1 and 2.
func TestCountsAgree(t *testing.T) {
	co := Checkout{Pool: "p", Culprit: Frame{Function: "app.f", File: "/src/app/f.go", Line: 7}, Held: time.Second, TxStatus: "idle"}
	messages := map[string]func(n int) string{
		"numbered": func(n int) string { return numbered(n, "connection", "connections") },
		"warm-up": func(n int) string {
			return fmt.Sprintf("pgxleak: warming up %s (WithMinIdleConns)", numbered(n, "connection", "connections"))
		},
		"deadlock": func(n int) string { return allHeldWaiting(n) },
		"capacity": func(n int) string {
			return Capacity{Instances: n, PoolMax: n, Demand: n * n, MaxConnections: 100, Available: 97, Fits: true}.summary()
		},
		"capacity unlimited": func(n int) string { return Capacity{Instances: n, MaxConnections: 100}.summary() },
		"leak error": func(n int) string {
			e := &LeakError{Unlisted: n}
			for range n {
				e.Checkouts = append(e.Checkouts, co)
			}
			return e.Error()
		},
		"stats": func(n int) string {
			var s PoolStats
			s.InUse, s.WaitCount, s.Checkouts, s.Returns, s.Suspected = n, int64(n), uint64(n), uint64(n), uint64(n)
			return s.String()
		},
		"inspection": func(n int) string {
			in := Inspection{Pool: "p"}
			for range n {
				in.Checkouts = append(in.Checkouts, co)
				in.Waiters = append(in.Waiters, Goroutine{ID: 9, At: co.Culprit})
			}
			return in.String()
		},
	}
	for k := LeakSuspected; !strings.HasPrefix(k.String(), "Kind("); k++ {
		messages["summary "+k.String()] = func(n int) string { return "pgxleak: " + k.more(n) + " at x.go:1" }
	}
	for name, msg := range messages {
		for _, n := range []int{0, 1, 2} {
			got := msg(n)
			assert.NotRegexp(t, onePlural, got, "%s(%d)", name, n)
			assert.NotRegexp(t, wrongSingular, got+" ", "%s(%d)", name, n)
		}
	}
	// The words themselves.
	for _, tc := range []struct {
		n    int
		want string
	}{{0, "0 connections"}, {1, "1 connection"}, {2, "2 connections"}} {
		assert.Equal(t, tc.want, numbered(tc.n, "connection", "connections"))
	}
	assert.Equal(t, "1 more suspected leak", LeakSuspected.more(1))
	assert.Equal(t, "2 more suspected leaks", LeakSuspected.more(2))
}
