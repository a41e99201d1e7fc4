package pgxleak

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgxleak/pgxleak/internal/gdump"
)

// idleConnector makes connections that do nothing: enough for db.Conn.
type idleConnector struct{}

func (idleConnector) Connect(context.Context) (driver.Conn, error) { return idleConn{}, nil }
func (idleConnector) Driver() driver.Driver                        { return nil }

type idleConn struct{}

func (idleConn) Prepare(string) (driver.Stmt, error) {
	return nil, errors.New("idleConn: no statements")
}
func (idleConn) Close() error              { return nil }
func (idleConn) Begin() (driver.Tx, error) { return nil, errors.New("idleConn: no transactions") }

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
			if err != nil {
				t.Error(err)
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
	db, err := OpenDB(idleConnector{}, WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p := poolOf(db)
	holder := func() (*Goroutine, string) {
		t.Helper()
		snaps := p.tracker.outSnapshots(p.now())
		if len(snaps) == 0 {
			t.Fatal("nothing checked out")
		}
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
	if h == nil || h.MatchedBy != matchedByStack || h.Exited || len(h.Stack) == 0 || !strings.HasSuffix(h.Stack[0].File, "diagnosis_internal_test.go") {
		t.Fatalf("holder %+v (%s): want the blocked goroutine, matched by checkout stack", h, note)
	}
	if !strings.Contains(h.verdict(Frame{}), "(found by its checkout stack: goroutine identity unavailable)") {
		t.Errorf("holder %q: want the fallback named", h.verdict(Frame{}))
	}
	close(release)
	wg.Wait()

	// Two goroutines that match: not guessed.
	release = make(chan struct{})
	wg = holdConns(t, db, 2, release)
	h, note = holder()
	if h != nil || !strings.Contains(note, "2 goroutines match the checkout stack") {
		t.Errorf("holder %+v, note %q: want none, and why", h, note)
	}
	close(release)
	wg.Wait()
}

// TestDumpRateLimit: a storm of inspections and reports takes one
// goroutine dump per interval.
func TestDumpRateLimit(t *testing.T) {
	db, err := OpenDB(idleConnector{}, WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
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
				if _, err := Inspect(context.Background(), db); err != nil {
					t.Error(err)
				}
				p.emit(report{kind: LeakSuspected, snap: p.tracker.outSnapshots(p.now())[0]})
			}
		})
	}
	storm.Wait()
	allowed := 1 + uint64(time.Since(start)/dumpInterval)
	if n := p.diagnosis.dumps.Dumps(); n > allowed {
		t.Errorf("%d dumps for 1000 inspections and 1000 reports in %v; want at most %d", n, time.Since(start), allowed)
	}
}

// TestHolderCheckoutDuringDump: a checkout recorded while the dump was
// being taken may not show in it (its goroutine can still look like it
// waits for a connection): it is left without a holder, not joined. (It
// made TestNoFalsePositives report a false deadlock under load.)
func TestHolderCheckoutDuringDump(t *testing.T) {
	db, err := OpenDB(idleConnector{}, WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p := poolOf(db)
	d := gdump.Take(0)
	if d.Took <= 0 {
		t.Fatalf("dump took %v", d.Took)
	}
	during := d.Taken.Add(-d.Took / 2)
	s := snapshot{goid: holderID(), checkoutAt: int64(during.Sub(p.epoch))}
	if h, note := p.holderOf(s, Checkout{}, d); h != nil || !strings.Contains(note, "newer than the goroutine dump") {
		t.Errorf("holder %+v, note %q: want none for a checkout made while the dump was taken", h, note)
	}
	s.checkoutAt = int64(d.Taken.Add(-d.Took - time.Millisecond).Sub(p.epoch))
	if h, _ := p.holderOf(s, Checkout{}, d); h == nil || h.ID != s.goid {
		t.Errorf("holder %+v: want this goroutine for a checkout made before the dump", h)
	}
}

// TestDiagnoseCoversHolderless: a checkout whose holder could not be
// found (no goroutine identity, an ambiguous stack) is covered by the
// last diagnosis while its dump is the latest: reports in a storm do not
// describe every checkout again each.
func TestDiagnoseCoversHolderless(t *testing.T) {
	db, err := OpenDB(idleConnector{}, WithLogger(nil), WithoutServerView())
	if err != nil {
		t.Fatal(err)
	}
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
		if c.Holder != nil {
			t.Fatalf("holder %+v: want none (the test needs holderless checkouts)", c.Holder)
		}
	}
	for _, s := range snaps {
		if d := p.diagnose(context.Background(), false, holderKey{s.conn, s.checkoutAt}); d != first {
			t.Error("a holderless checkout of the last diagnosis was diagnosed again")
		}
	}
}
