package pgxleak

import (
	"context"
	"database/sql/driver"
	"errors"
	"testing"
	"time"
)

// blockingConnector's Connect waits for release, so a test can hold a
// connect in flight.
type blockingConnector struct {
	entered chan struct{}
	release chan struct{}
}

func (b blockingConnector) Connect(context.Context) (driver.Conn, error) {
	b.entered <- struct{}{}
	<-b.release
	return fullConn{}, nil
}
func (blockingConnector) Driver() driver.Driver { return nil }

// TestDrainWaitsForConnectInFlight: a checkout whose Connect began before
// Drain must neither slip past it nor be handed out after it.
func TestDrainWaitsForConnectInFlight(t *testing.T) {
	bc := blockingConnector{entered: make(chan struct{}), release: make(chan struct{})}
	db, err := OpenDB(bc, WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	connErr := make(chan error, 1)
	go func() {
		c, err := db.Conn(context.Background())
		if err == nil {
			c.Close()
		}
		connErr <- err
	}()
	<-bc.entered // Connect is under way
	drained := make(chan error, 1)
	go func() { drained <- Drain(context.Background(), db) }()
	pollUntil(t, func() bool { return trackerOf(db).draining.Load() })
	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v while a Connect was under way", err)
	case <-time.After(20 * time.Millisecond): // Drain polls every 5ms: it had its chances
	}
	close(bc.release)
	if err := <-connErr; !errors.Is(err, ErrDraining) {
		t.Fatalf("the in-flight checkout got %v, want ErrDraining", err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain = %v", err)
	}
}

func pollUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
