package pgxleak

import (
	"context"
	"database/sql/driver"
	"testing"
	"time"
)

type nopConnector struct{}

func (nopConnector) Connect(context.Context) (driver.Conn, error) { return fullConn{}, nil }
func (nopConnector) Driver() driver.Driver                        { return nil }

// TestJitterSpreadsLifetimes: each connection gets its own lifetime in
// [lifetime−jitter, lifetime], spread rather than equal.
func TestJitterSpreadsLifetimes(t *testing.T) {
	const life, jitter = time.Hour, 10 * time.Minute
	cfg, err := newConfig([]Option{WithConnMaxLifetime(life), WithConnMaxLifetimeJitter(jitter)})
	if err != nil {
		t.Fatal(err)
	}
	p := newTracker(cfg, "jitter")
	t.Cleanup(p.close)
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for range 200 {
		created := p.now()
		c := newConn(p, fullConn{})
		got := time.Duration(c.expiresAt - created)
		if got > life || got < life-jitter-time.Second {
			t.Fatalf("lifetime %v outside [%v, %v]", got, life-jitter, life)
		}
		lo, hi = min(lo, got), max(hi, got)
	}
	if hi-lo < jitter/2 {
		t.Fatalf("200 lifetimes spread over only %v of the %v jitter", hi-lo, jitter)
	}
	cfg, _ = newConfig([]Option{WithConnMaxLifetime(life), WithConnMaxLifetimeJitter(0)})
	p = newTracker(cfg, "nojitter")
	t.Cleanup(p.close)
	c := newConn(p, fullConn{})
	if got := time.Duration(c.expiresAt - p.now()); got > life || got < life-time.Second {
		t.Fatalf("without jitter the lifetime is %v, want %v", got, life)
	}
}

func TestDefaultConfig(t *testing.T) {
	cfg, err := newConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.maxIdle != cfg.maxOpen || cfg.lifetimeJitter != DefaultConnMaxLifetime/10 || cfg.minIdle != 0 || cfg.maxUses != 0 {
		t.Fatalf("defaults: %+v", cfg)
	}
}

// TestExpiredConnectionDiscarded: past its jittered lifetime a connection
// is refused at checkout (ResetSession → ErrBadConn) and at return
// (IsValid → false), before database/sql's own, later, maximum.
func TestExpiredConnectionDiscarded(t *testing.T) {
	cfg, _ := newConfig([]Option{WithMaxUses(2)})
	p := newTracker(cfg, "expiry")
	t.Cleanup(p.close)
	c := newConn(p, fullConn{})
	w := c.wrapper
	if err := w.(driver.SessionResetter).ResetSession(context.Background()); err != nil {
		t.Fatalf("fresh connection refused: %v", err)
	}
	if !w.(driver.Validator).IsValid() {
		t.Fatal("fresh connection invalid after one use")
	}
	c.expiresAt = p.now() - 1
	if err := w.(driver.SessionResetter).ResetSession(context.Background()); err != driver.ErrBadConn {
		t.Fatalf("expired connection: ResetSession = %v, want driver.ErrBadConn", err)
	}
	c.expiresAt = 0
	_ = w.(driver.SessionResetter).ResetSession(context.Background()) // second use
	if w.(driver.Validator).IsValid() {
		t.Fatal("connection valid after reaching WithMaxUses(2)")
	}
}
