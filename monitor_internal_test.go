package pgxleak

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// TestHeldBackThenReturned: a checkout held past the leak threshold that
// the scan holds back for the server's view is reported exactly once,
// whether it comes back (or is closed) before the view arrives, after a
// view that says it waited on a lock, or is judged while still out.
// Issue 19: one that came back inside the wait was never reported.
func TestHeldBackThenReturned(t *testing.T) {
	const pid, threshold = 4242, time.Minute
	lockWait := ServerActivity{State: "active", WaitEventType: "Lock", WaitEvent: "transactionid", BlockedBy: []uint32{999}}
	idleInTx := ServerActivity{State: "idle in transaction"}
	type step func(t *testing.T, p *pool, c *conn)
	back := func(_ *testing.T, _ *pool, c *conn) { c.checkin() }
	closed := func(_ *testing.T, p *pool, c *conn) { p.closeConn(&c.connState) }
	scan := func(_ *testing.T, p *pool, _ *conn) { p.scanLeaks() }
	view := func(a ServerActivity, late time.Duration) step {
		return func(_ *testing.T, p *pool, c *conn) {
			c.mu.Lock()
			due := p.epoch.Add(time.Duration(c.checkoutAt) + threshold)
			c.mu.Unlock()
			s := &p.diagnosis.side
			s.cacheMu.Lock()
			s.view, s.asked, s.viewAt = map[uint32]ServerActivity{pid: a}, []uint32{pid}, due.Add(late)
			s.cacheMu.Unlock()
		}
	}
	// blocker checks out the connection of the pool whose backend holds
	// the lock (PID 999), and gives it back if returned.
	blocker := func(returned bool) step {
		return func(t *testing.T, p *pool, _ *conn) {
			inner, err := (&testdriver.Connector{}).Connect(context.Background())
			require.NoError(t, err)
			b := newConn(p, inner)
			b.pid = 999
			b.mu.Lock()
			b.checkoutLocked(context.Background())
			b.checkoutAt = p.now() - int64(threshold) // out before the view was read
			b.mu.Unlock()
			if !returned {
				t.Cleanup(func() { b.checkin() }) // before the pool closes
				return
			}
			b.checkin()
		}
	}
	// server checks the blocked report's server view: the lock's holder
	// named by its culprit, not named, or no view (another backend).
	server := func(view, named bool) func(*testing.T, Leak) {
		return func(t *testing.T, l Leak) {
			if !view {
				assert.Nil(t, l.Server, "the server view of a blocker that is no longer out")
				assert.Contains(t, l.String(), "the lock is held by another backend")
				return
			}
			require.NotNil(t, l.Server, "the blocked report's server view")
			assert.Equal(t, lockWait.BlockedBy, l.Server.BlockedBy)
			_, ok := l.Server.Culprits[999]
			assert.Equal(t, named, ok, "the blocker named: %s", l)
		}
	}
	noServer := func(t *testing.T, l Leak) { assert.Nil(t, l.Server, "a view read after the checkout came back") }
	for _, tc := range []struct {
		name      string
		steps     []step
		want      []Kind
		suspected uint64 // and resolved: each suspected leak here comes back
		check     func(*testing.T, Leak)
	}{
		{"back before the view", []step{back}, []Kind{LeakSuspected, Resolved}, 1, nil},
		{"closed before the view", []step{closed}, []Kind{LeakSuspected, Resolved}, 1, nil},
		{"back after a view saying it waited on a lock", []step{view(lockWait, time.Millisecond), back}, []Kind{Blocked}, 0, server(true, false)},
		{"the same, its blocker out", []step{blocker(false), view(lockWait, time.Millisecond), back}, []Kind{Blocked}, 0, server(true, true)},
		{"the same, its blocker back", []step{blocker(true), view(lockWait, time.Millisecond), back}, []Kind{Blocked}, 0, server(false, false)},
		{"back after a view read before it was due", []step{view(lockWait, -time.Millisecond), back}, []Kind{LeakSuspected, Resolved}, 1, nil},
		{"back before a view read after its return (the backend's next checkout)", []step{view(lockWait, time.Hour), back}, []Kind{LeakSuspected, Resolved}, 1, noServer},
		{"back after a view saying it was idle in a transaction", []step{view(idleInTx, time.Millisecond), back}, []Kind{LeakSuspected, Resolved}, 1, func(t *testing.T, l Leak) {
			require.NotNil(t, l.Server, "the view read while it was out")
			assert.Equal(t, "idle in transaction", l.Server.State)
		}},
		{"judged out, then back", []step{view(idleInTx, time.Millisecond), scan, back}, []Kind{LeakSuspected, Resolved}, 1, nil},
		{"judged blocked, then back", []step{view(lockWait, time.Millisecond), scan, back}, []Kind{Blocked}, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []Leak // no monitor started: the callback runs in emit
			p := newTestTracker(t, []Option{WithLeakThreshold(threshold), WithLogger(nil), WithOnLeak(func(l Leak) { got = append(got, l) }),
				optionFunc(func(c *config) { c.serverWait = time.Hour })}) // the view is due for as long as the test takes
			inner, err := (&testdriver.Connector{}).Connect(context.Background())
			require.NoError(t, err)
			c := newConn(p, inner)
			c.pid = pid // as pgx's would have: the server's view covers it
			c.mu.Lock()
			c.checkoutLocked(context.Background())
			// Past the threshold 10 ms ago: a view read a millisecond after
			// it became due was read while it was out.
			c.checkoutAt = p.now() - int64(threshold) - int64(10*time.Millisecond)
			c.mu.Unlock()

			p.scanLeaks()
			require.Empty(t, got, "reported before the server's view arrived")
			for _, s := range tc.steps {
				s(t, p, c)
				p.flush()
			}
			p.scanLeaks()
			p.flush()

			kinds := make([]Kind, len(got))
			for i, l := range got {
				kinds[i] = l.Kind
				assert.GreaterOrEqual(t, l.Held, threshold, "%s: held", l.Kind)
			}
			require.Equal(t, tc.want, kinds, "reports: %v", got)
			if tc.check != nil {
				tc.check(t, got[0])
			}
			assert.Equal(t, tc.suspected, p.tracker.suspectedLeaks.Load(), "suspected leaks counted")
			assert.Equal(t, tc.suspected, p.tracker.resolvedLeaks.Load(), "resolved leaks counted")
		})
	}
}
