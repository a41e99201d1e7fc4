package pgxleak

import (
	"context"
	"database/sql/driver"
	"errors"
	"testing"
)

// resetBlockingConn's ResetSession waits for release once armed, so a test
// can hold a checkout of an idle connection in flight.
type resetBlockingConn struct {
	armed   bool
	entered chan struct{}
	release chan struct{}
}

func (c *resetBlockingConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("no") }
func (c *resetBlockingConn) Close() error                        { return nil }
func (c *resetBlockingConn) Begin() (driver.Tx, error)           { return nil, errors.New("no") } //nolint:staticcheck
func (c *resetBlockingConn) Ping(context.Context) error          { return nil }

func (c *resetBlockingConn) ResetSession(context.Context) error {
	if c.armed {
		c.entered <- struct{}{}
		<-c.release
	}
	return nil
}

type resetBlockingConnector struct{ c *resetBlockingConn }

func (r resetBlockingConnector) Connect(context.Context) (driver.Conn, error) { return r.c, nil }
func (resetBlockingConnector) Driver() driver.Driver                          { return nil }

// TestDrainResetInFlight: a checkout of an idle connection whose session
// reset is under way when Drain starts must not be handed out once Drain
// has looked: ResetSession checks for draining under the connection's
// lock, which Drain takes for every connection.
func TestDrainResetInFlight(t *testing.T) {
	rc := &resetBlockingConn{entered: make(chan struct{}), release: make(chan struct{})}
	db, err := OpenDB(resetBlockingConnector{rc}, WithMaxOpenConns(1), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(); err != nil { // opens the connection and returns it
		t.Fatal(err)
	}
	rc.armed = true // set before any other goroutine calls ResetSession
	p := trackerOf(db)
	before := p.checkoutsSeen()
	connErr := make(chan error, 1)
	go func() {
		c, err := db.Conn(context.Background())
		if err == nil {
			c.Close()
		}
		connErr <- err
	}()
	<-rc.entered // the reset is under way
	drained := make(chan error, 1)
	go func() { drained <- Drain(context.Background(), db) }()
	pollUntil(t, func() bool { return p.draining.Load() })
	close(rc.release)
	if err := <-connErr; err == nil {
		t.Fatal("the checkout whose reset straddled Drain was handed out")
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain = %v", err)
	}
	if got := p.checkoutsSeen(); got != before {
		t.Fatalf("%d checkouts recorded during Drain, want none", got-before)
	}
}

// checkoutsSeen counts the user checkouts the tracker recorded.
func (p *tracker) checkoutsSeen() uint64 {
	var s PoolStats
	p.fillStats(&s)
	return s.Checkouts
}
