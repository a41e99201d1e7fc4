package pgxleak

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak/internal/gdump"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// holdConns checks out n connections of db, each from its own goroutine
// made by the same code, which then blocks until release is closed. It
// returns once all are held.
func holdConns(t *testing.T, db *sql.DB, n int, release chan struct{}) *sync.WaitGroup {
	t.Helper()
	var wg, held sync.WaitGroup
	held.Add(n)
	for range n {
		wg.Go(func() {
			c, err := db.Conn(context.Background())
			if !assert.NoError(t, err) {
				held.Done()
				return
			}
			defer c.Close()
			held.Done()
			<-release
		})
	}
	held.Wait()
	return &wg
}

// TestHolderMatchedByStack: without goroutine identity, the holder is
// found by its checkout stack, and is never guessed when that cannot
// single it out.
func TestHolderMatchedByStack(t *testing.T) {
	db, err := OpenDB(&testdriver.Connector{}, WithLogger(nil))
	require.NoError(t, err)
	defer db.Close()
	p := poolOf(db)
	holder := func() (*Goroutine, string) {
		t.Helper()
		snaps := p.tracker.outSnapshots(p.now())
		require.NotEmpty(t, snaps, "nothing checked out")
		s := snaps[0]
		s.goid = 0 // as when identity is unavailable
		c := p.describe(s)
		for _, f := range c.Stack { // this package is a library to the culprit policy
			if strings.HasSuffix(f.File, "diagnosis_internal_test.go") {
				c.Culprit = f
				break
			}
		}
		return p.holderOf(s, c, gdump.Take(0))
	}

	release := make(chan struct{})
	wg := holdConns(t, db, 1, release)
	var h *Goroutine
	var note string
	deadline := time.Now().Add(5 * time.Second)
	for h, note = holder(); (h == nil || h.State != "chan receive") && time.Now().Before(deadline); h, note = holder() {
	}
	require.NotNil(t, h, "no holder: %s", note)
	require.False(t, h.MatchedBy != matchedByStack || h.Exited || len(h.Stack) == 0 || !strings.HasSuffix(h.Stack[0].File, "diagnosis_internal_test.go"),
		"holder %+v (%s): want the blocked goroutine, matched by checkout stack", h, note)
	assert.Contains(t, h.verdict(), "(found by its checkout stack: goroutine identity unavailable)", "the fallback is named")
	close(release)
	wg.Wait()

	// Two goroutines that match: not guessed.
	release = make(chan struct{})
	wg = holdConns(t, db, 2, release)
	h, note = holder()
	assert.Nil(t, h, "two goroutines match: no holder is guessed")
	assert.Contains(t, note, "2 goroutines match the checkout stack", "the note says why")
	close(release)
	wg.Wait()
}

// TestDumpRateLimit: a storm of inspections and reports takes one
// goroutine dump per interval.
func TestDumpRateLimit(t *testing.T) {
	db, err := OpenDB(&testdriver.Connector{}, WithLogger(nil))
	require.NoError(t, err)
	defer db.Close()
	p := poolOf(db)
	release := make(chan struct{})
	wg := holdConns(t, db, 1, release)
	defer wg.Wait()
	defer close(release)
	start := time.Now()
	var storm sync.WaitGroup
	for range 50 {
		storm.Go(func() {
			for range 20 {
				_, err := Inspect(context.Background(), db)
				assert.NoError(t, err)
				p.emit(report{kind: LeakSuspected, snap: p.tracker.outSnapshots(p.now())[0]})
			}
		})
	}
	storm.Wait()
	allowed := 1 + uint64(time.Since(start)/dumpInterval)
	assert.LessOrEqual(t, p.diagnosis.dumps.Dumps(), allowed, "dumps for 1000 inspections and 1000 reports in %v", time.Since(start))
}

// TestHolderCheckoutDuringDump: a checkout recorded while the dump was
// being taken may not show in it (its goroutine can still look like it
// waits for a connection): it is left without a holder, not joined. (It
// made TestNoFalsePositives report a false deadlock under load.)
func TestHolderCheckoutDuringDump(t *testing.T) {
	db, err := OpenDB(&testdriver.Connector{}, WithLogger(nil))
	require.NoError(t, err)
	defer db.Close()
	p := poolOf(db)
	d := gdump.Take(0)
	require.Positive(t, d.Took, "the dump's duration")
	during := d.Taken.Add(-d.Took / 2)
	s := snapshot{goid: holderID(), checkoutAt: int64(during.Sub(p.epoch))}
	h, note := p.holderOf(s, Checkout{}, d)
	assert.Nil(t, h, "no holder for a checkout made while the dump was taken")
	assert.Contains(t, note, "newer than the goroutine dump")
	s.checkoutAt = int64(d.Taken.Add(-d.Took - time.Millisecond).Sub(p.epoch))
	h, _ = p.holderOf(s, Checkout{}, d)
	if assert.NotNil(t, h, "a checkout made before the dump has its holder") {
		assert.Equal(t, s.goid, h.ID, "the holder of a checkout made before the dump is this goroutine")
	}
}

// TestDiagnoseCoversHolderless: a checkout whose holder could not be
// found (no goroutine identity, an ambiguous stack) is covered by the
// last diagnosis while its dump is the latest: reports in a storm do not
// describe every checkout again each.
func TestDiagnoseCoversHolderless(t *testing.T) {
	db, err := OpenDB(&testdriver.Connector{}, WithLogger(nil), WithoutServerView())
	require.NoError(t, err)
	defer db.Close()
	p := poolOf(db)
	release := make(chan struct{})
	wg := holdConns(t, db, 2, release) // the same code: the stack cannot single one out
	defer wg.Wait()
	defer close(release)
	p.tracker.each(func(c *connState) { c.goid = 0 })
	p.diagnosis.diagMu.Lock()
	p.diagnosis.dumps.Interval = time.Hour // the dump stays the latest for the test
	p.diagnosis.diagMu.Unlock()
	snaps := p.tracker.outSnapshots(p.now())
	first := p.diagnose(context.Background(), false, holderKey{snaps[0].conn, snaps[0].checkoutAt})
	for _, c := range first.checkouts {
		require.Nil(t, c.Holder, "the test needs holderless checkouts")
	}
	for _, s := range snaps {
		assert.Same(t, first, p.diagnose(context.Background(), false, holderKey{s.conn, s.checkoutAt}),
			"a holderless checkout of the last diagnosis was diagnosed again")
	}
}

// TestWaitsNowBounds: a waiter counts from the first dump that saw it, and
// keeps that start across the next dump only when the two dumps saw one
// wait (no wait both started and ended between them); the runtime's whole
// minutes count too. The longest is never more than the wait.
func TestWaitsNowBounds(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	stats := func(count int64, dur time.Duration) sql.DBStats {
		return sql.DBStats{WaitCount: count, WaitDuration: dur}
	}
	dump := func(taken time.Duration, ws ...Goroutine) *findings {
		return &findings{dump: &gdump.Snapshot{Started: at(taken - time.Millisecond), Taken: at(taken)}, waiters: ws}
	}
	for _, tc := range []struct {
		name        string
		after       sql.DBStats // read after the second dump; 3 waits, 0 ended before the first
		waited      time.Duration
		longestAt2s time.Duration
	}{
		{"no wait started or ended: one wait", stats(3, 0), 0, 2 * time.Second},
		{"waits started, none ended: one wait", stats(5, 0), 0, 2 * time.Second},
		{"waits ended, none started: one wait", stats(3, time.Second), 0, 2 * time.Second},
		{"waits started and ended: maybe served and queued again, counted from the second dump", stats(5, time.Second), 0, time.Second},
		{"the runtime says two minutes", stats(5, time.Second), 2 * time.Minute, 2*time.Minute + time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w waitsNow
			w.read(at(-50*time.Millisecond), stats(3, 0))
			w.join(dump(0, Goroutine{ID: 7}, Goroutine{ID: 8}), stats(3, 0))
			w.read(at(950*time.Millisecond), stats(3, 0))
			w.join(dump(time.Second, Goroutine{ID: 7, Waiting: tc.waited}), tc.after)
			n, longest := w.now(at(2 * time.Second))
			assert.Equal(t, 1, n, "waiting")
			assert.Equal(t, tc.longestAt2s, longest, "the longest wait")
			assert.Zero(t, w.waited(at(2*time.Second), 8), "a goroutine no longer waiting")
			w.join(dump(time.Second, Goroutine{ID: 9}), stats(9, 9)) // the same dump again: nothing changes
			n, _ = w.now(at(2 * time.Second))
			assert.Equal(t, 1, n, "a dump joined twice changed the waiters")
			w.clear()
			n, longest = w.now(at(2 * time.Second))
			assert.Zero(t, n, "after clear: waiting")
			assert.Zero(t, longest, "after clear: the longest wait")
			assert.False(t, w.any(), "after clear")
		})
	}
}
