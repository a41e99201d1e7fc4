package livepage

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
)

// constructedPage is a page with what the stuck-pool diagnosis fills in
// (holders, the server's view, waiters, a deadlock), built by hand.
func constructedPage(holders int) Page {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(fn string, line int) pgxleak.Frame {
		return pgxleak.Frame{Function: "app." + fn, File: "/src/app/service.go", Line: line}
	}
	stk := []pgxleak.Frame{at("handler", 36), {Function: "net/http.HandlerFunc.ServeHTTP", File: "/go/src/net/http/server.go", Line: 2294}}
	co := func(line int, pid uint32, held time.Duration) pgxleak.Checkout {
		return pgxleak.Checkout{Pool: "orders", Culprit: at("handler", line), Stack: stk, CheckedOutAt: now.Add(-held),
			Held: held, BackendPID: pid, TxStatus: "in transaction", LastStatement: "SELECT * FROM orders WHERE id = $1 FOR UPDATE"}
	}
	exited := co(70, 4120, 31*time.Second)
	exited.Holder = &pgxleak.Goroutine{ID: 77, Exited: true, MatchedBy: "goroutine id"}
	exited.Server = &pgxleak.ServerActivity{State: "idle in transaction", Blocking: []uint32{4121}}
	alive := co(17, 4121, 45*time.Second)
	alive.Holder = &pgxleak.Goroutine{ID: 812, State: "IO wait", Waiting: 2 * time.Minute, At: at("work", 29), Stack: []pgxleak.Frame{at("work", 29)}, MatchedBy: "goroutine id"}
	alive.Server = &pgxleak.ServerActivity{State: "active", WaitEventType: "Lock", WaitEvent: "transactionid", BlockedBy: []uint32{4120}}
	dl := co(50, 4122, 2*time.Second)
	dl.Holder = &pgxleak.Goroutine{ID: 900, State: "select", At: at("nested", 52)}
	cs := []pgxleak.Checkout{alive, exited, dl}
	for i := len(cs); i < holders; i++ {
		c := co(100+i, uint32(5000+i), time.Duration(holders-i)*time.Millisecond)
		c.Holder = &pgxleak.Goroutine{ID: uint64(10000 + i), State: "chan receive", At: at("wait", 200+i), Stack: stk}
		cs = append(cs, c)
	}
	var hist []Sample
	for i := range 30 {
		hist = append(hist, Sample{At: now.Add(time.Duration(i-29) * time.Second), Interval: time.Second, InUse: i % 4, Idle: 1, MaxOpen: 3, Waits: int64(i % 3), WaitTime: time.Duration(i) * time.Millisecond, Checkouts: uint64(i), Suspected: uint64(i / 10)})
	}
	pp := PoolPage{
		Inspection: pgxleak.Inspection{
			Pool: "orders", TakenAt: now, Checkouts: cs,
			Waiters: []pgxleak.Goroutine{
				{ID: 900, At: at("nested", 52), Stack: []pgxleak.Frame{at("nested", 52)}, Holds: []pgxleak.Checkout{dl}},
				{ID: 901, At: at("list", 88)},
				{ID: 902, At: at("list", 88)},
			},
			Notes:    []string{"server view unavailable: too many clients already"},
			Reports:  []pgxleak.Report{{Kind: pgxleak.Deadlock, Headline: "pgxleak: deadlock", At: at("nested", 52), Count: 3, First: now.Add(-time.Minute), Last: now}},
			Settings: pgxleak.Settings{Tuned: true, MaxOpen: 3},
			Server: &pgxleak.Capacity{ReadAt: now, Instances: 1, PoolMax: 3, ApplicationName: "orders-api/orders", MaxConnections: 100, ReservedConnections: 3, Available: 97,
				InUse: 12, Fleet: []pgxleak.FleetUsage{{ApplicationName: "orders-api/orders", Connections: 9}, {ApplicationName: "", Connections: 3}}},
		},
		SampleInterval: time.Second,
		History:        hist,
	}
	pp.Stats.MaxOpenConnections, pp.Stats.InUse = 3, 3
	pp.capRows()
	return Page{TakenAt: now, Pools: []PoolPage{pp}}
}

// TestPageHoldersWaitersServer renders what Inspect fills in once the
// stuck-pool diagnosis does, from constructed values.
func TestPageHoldersWaitersServer(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, renderPage(&b, constructedPage(3), "n"))
	html := b.String()
	for _, want := range []string{
		"service.go:17", // culprits
		"exited: nothing can return it",
		"goroutine 812, IO wait for 2m0s, now at ",
		"active, waiting on Lock transactionid, blocked by PID 4120 (checked out at ",
		"idle in transaction",
		`class="alert">DEADLOCK: 1 goroutine waits for a connection at `,
		"2 goroutines waiting for a connection at ",
		"Note: server view unavailable: too many clients already",
		"max_connections 100 − 3 reserved = 97 available",
		`<tr class="self"><td class="mono">orders-api/orders</td><td class="n">9</td>`,
		"(none)",
	} {
		assert.Contains(t, html, want)
	}
	// Deadlocks on top: the deadlocked waiter line comes before the others.
	i, j := strings.Index(html, "DEADLOCK: 1 goroutine waiting"), strings.Index(html, "2 goroutines waiting")
	assert.True(t, i >= 0 && j >= i, "deadlocked waiters not first (%d, %d)", i, j)
	// Longest held first.
	holders := html[strings.Index(html, "Holders now"):]
	i, j = strings.Index(holders, "service.go:17"), strings.Index(holders, "service.go:70")
	assert.True(t, i >= 0 && j >= i, "holders not longest first (%d, %d)", i, j)
	// One point per sample in every polyline.
	lines := regexp.MustCompile(`<polyline class="s\d" points="([^"]*)"`).FindAllStringSubmatch(html, -1)
	assert.Len(t, lines, 12, "polylines: in use, idle, max; waits started, waiting now; ended waits, longest now; checkouts; four leak kinds")
	for _, m := range lines {
		assert.Len(t, strings.Fields(m[1]), 30, "points in a polyline: one per sample")
	}
}

// TestPageWaitsInProgressAndLocks: waits that have not ended are in the
// summary, the plots and a banner once past the slow-wait threshold; each
// holder row names the PIDs it blocks and is blocked by; a connection
// blocked on another checkout's lock gets a banner naming the blocker's
// line.
func TestPageWaitsInProgressAndLocks(t *testing.T) {
	p := constructedPage(3)
	pp := &p.Pools[0]
	pp.Stats.WaitCount, pp.Stats.Waiting, pp.Stats.LongestWait = 3, 3, 15*time.Second
	pp.Settings.SlowWaitThreshold = 100 * time.Millisecond
	last := &pp.History[len(pp.History)-1]
	last.Waiting, last.LongestWait = 3, 15*time.Second
	var b bytes.Buffer
	require.NoError(t, renderPage(&b, p, ""))
	html := b.String()
	for _, want := range []string{
		"3 waits for a connection so far (0s in all, counted as they end), 3 waiting now, the longest for at least 15s;",
		`class="alert">SLOW WAITS: 3 goroutines waiting for a connection now, the longest for at least 15s (the slow-wait threshold is 100ms), at app/service.go:52 (app.nested) ×1, app/service.go:88 (app.list) ×2.`,
		"waiting now: 3</li>",
		"longest wait now: 15</li>",
		"idle in transaction, blocking PID 4121 (checked out at app/service.go:17 (app.handler))",
		"blocked by PID 4120 (checked out at app/service.go:70 (app.handler))",
		`class="alert">LOCK WAIT: the connection checked out at app/service.go:70 (app.handler) (PID 4120, idle in transaction) holds locks that 1 other connection of this pool wait for (PID 4121, checked out at app/service.go:17 (app.handler)): fix app/service.go:70 (app.handler).`,
	} {
		assert.Truef(t, strings.Contains(html, want), "page lacks %q", want)
	}

	// Under the threshold, or none waiting: no banner.
	pp.Stats.LongestWait = 50 * time.Millisecond
	b.Reset()
	require.NoError(t, renderPage(&b, p, ""))
	assert.False(t, strings.Contains(b.String(), "SLOW WAITS"), "a banner under the threshold")
	assert.True(t, strings.Contains(b.String(), "3 waiting now, the longest for at least 50ms"), "the waits in progress in the summary")
}

// TestPageWholePoolDeadlocked: every holder of a full pool waits.
func TestPageWholePoolDeadlocked(t *testing.T) {
	p := constructedPage(3)
	pp := &p.Pools[0]
	pp.Waiters = nil
	for _, c := range pp.Checkouts {
		c.Holder.Exited = false
		pp.Waiters = append(pp.Waiters, pgxleak.Goroutine{ID: c.Holder.ID, At: c.Holder.At, Holds: []pgxleak.Checkout{c}})
	}
	var b bytes.Buffer
	require.NoError(t, renderPage(&b, p, ""))
	assert.Contains(t, b.String(), "The whole pool is deadlocked: all 3 connections")
}

// TestPageVerdict: the pool's verdict, from Inspection's public fields,
// heads its section; a verdict other than healthy is an alert.
func TestPageVerdict(t *testing.T) {
	for _, tc := range []struct {
		kind, reason, want string
	}{
		{"leaking", "leaking: 2 of 3 connections held by leaks at app/service.go:70",
			`<p class="verdict alert" data-verdict="leaking">Verdict: leaking: 2 of 3 connections held by leaks at app/service.go:70.</p>`},
		{"healthy", "healthy: no load measured yet; no caller waited",
			`<p class="verdict" data-verdict="healthy">Verdict: healthy: no load measured yet; no caller waited.</p>`},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			p := constructedPage(3)
			p.Pools[0].Verdict, p.Pools[0].VerdictReason = tc.kind, tc.reason
			var b bytes.Buffer
			require.NoError(t, renderPage(&b, p, ""))
			assert.Contains(t, b.String(), tc.want)
		})
	}
}

// TestPageCap: beyond 200 holders the page says how many it leaves out.
func TestPageCap(t *testing.T) {
	p := constructedPage(1000)
	var b bytes.Buffer
	require.NoError(t, renderPage(&b, p, ""))
	assert.Contains(t, b.String(), "… and 800 more not shown", "no cap message for 800 holders")
	assert.Equal(t, maxRows, strings.Count(b.String(), `<details data-key="pool-0-h-`), "holder rows")
}

// BenchmarkRenderPage1000Holders renders a pool with 1,000 holders, each
// with its holder goroutine, and reports the page's size.
func BenchmarkRenderPage1000Holders(b *testing.B) {
	var size int
	for b.Loop() {
		var buf bytes.Buffer
		p := constructedPage(1000) // capRows is part of the cost
		require.NoError(b, renderPage(&buf, p, ""))
		size = buf.Len()
	}
	b.ReportMetric(float64(size), "page-bytes")
}

// TestSettingsRowsLimitsFromOpen: when pgxleak could not read database/sql's
// limits back (Settings.LimitsFromOpen), the page says the limits shown are
// the ones Open set; otherwise it says nothing of it.
func TestSettingsRowsLimitsFromOpen(t *testing.T) {
	row := [2]string{"pool limits", "as Open set them: this Go's database/sql cannot be read back, so later db.Set… calls do not show (max open excepted)"}
	for _, fromOpen := range []bool{false, true} {
		rows := settingsRows(pgxleak.Settings{Tuned: true, MaxOpen: 3, MaxIdle: 4, LimitsFromOpen: fromOpen})
		assert.Equal(t, fromOpen, slices.Contains(rows, row), "LimitsFromOpen %v: the row %q shown\n%q", fromOpen, row[1], rows)
	}
}

// TestHolderHeldOnPurpose: a checkout held on purpose is listed, saying
// so and why, and not marked as a suspected leak.
func TestHolderHeldOnPurpose(t *testing.T) {
	c := pgxleak.Checkout{
		Culprit:   pgxleak.Frame{Function: "app.listen", File: "/src/app/queue.go", Line: 12},
		Held:      3 * time.Hour,
		OnPurpose: "app.listen",
	}
	h := newHolderView("p0", c, nil)
	assert.Contains(t, h.Held, "held on purpose (app.listen)", "holder row")
	assert.False(t, h.Suspected, "holder row: suspected")
}
