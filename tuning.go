package pgxleak

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// tune applies the configuration to db: database/sql's own settings, then
// the warm-up and the capacity check, both bounded by ctx. The capacity
// check only warns, unless ctx ended.
func (p *pool) tune(ctx context.Context, db *sql.DB) error {
	c := p.cfg
	db.SetMaxOpenConns(c.maxOpen)
	db.SetMaxIdleConns(c.maxIdle)
	db.SetConnMaxLifetime(c.sqlMaxLifetime())
	db.SetConnMaxIdleTime(c.maxIdleTime)
	if c.minIdle > 0 {
		wctx, cancel := context.WithTimeout(ctx, c.warmUpTimeout)
		defer cancel()
		if err := p.warmUp(wctx, c.minIdle); err != nil {
			return fmt.Errorf("pgxleak: warming up %s (WithMinIdleConns): %w", numbered(c.minIdle, "connection", "connections"), withCtxErr(wctx, err))
		}
	}
	if c.checkInstances > 0 {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		capa, err := CheckCapacity(&internalContext{cctx}, db, c.checkInstances) // not a user checkout
		switch {
		case err != nil && ctx.Err() != nil:
			return fmt.Errorf("pgxleak: checking capacity (WithCapacityCheck): %w", withCtxErr(ctx, err))
		case err != nil:
			msg, attrs := fitLine("pgxleak: capacity check failed", []slog.Attr{slog.String("pool", p.name()), slog.Any("error", err)})
			p.logger().LogAttrs(ctx, slog.LevelWarn, msg, attrs...)
		case !capa.Fits:
			msg, attrs := fitLine("pgxleak: "+capa.summary(), []slog.Attr{slog.String("pool", p.name())})
			p.logger().LogAttrs(ctx, slog.LevelWarn, msg, attrs...)
		}
	}
	return nil
}

// withCtxErr makes err, which ended a wait under ctx, also wrap ctx.Err()
// when ctx ended, so that errors.Is(err, context.DeadlineExceeded) holds
// whatever the driver made of the cancelled connect.
func withCtxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w: %w", cerr, err)
	}
	return err
}

// sqlMaxLifetime is the lifetime database/sql itself is given. pgxleak
// enforces the jittered lifetime itself: an expired connection is refused
// at its next checkout (ResetSession) and discarded at its return
// (IsValid), and the idle-time cleaner closes one nobody uses. A lifetime
// set on database/sql would cost a system clock read on every checkout
// and every return (its expired check), so it is left at 0, unless the
// idle-time cleaner would not close an unused expired connection soon
// enough: with no idle time, or an idle time longer than the lifetime.
func (c *config) sqlMaxLifetime() time.Duration {
	if c.maxLifetime > 0 && (c.maxIdleTime <= 0 || c.maxIdleTime > c.maxLifetime) {
		return c.maxLifetime
	}
	return 0
}

// internalContext marks the pool's own checkouts (warm-up, keeping idle
// connections), so that the tracker does not count or report them.
// database/sql passes the caller's context unchanged to Connect,
// ResetSession and Ping, so a type assertion recognises it.
type internalContext struct{ context.Context }

// warmUp checks out n connections at once, pings each and returns them, so
// that n connections are open and idle afterwards. Holding them together is
// what makes database/sql open new ones instead of reusing one n times.
func (p *pool) warmUp(ctx context.Context, n int) error {
	ictx := &internalContext{ctx}
	conns := make([]*sql.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := p.db.Conn(ictx)
			if err == nil {
				conns[i] = c
				err = c.PingContext(ictx)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
	return joinDistinct(errs)
}

// joinDistinct joins errors, each distinct text once: n connections that
// fail the same way (a server that is down) give one error, not n copies.
func joinDistinct(errs []error) error {
	var out []error
	seen := make(map[string]bool)
	for _, err := range errs {
		if err != nil && !seen[err.Error()] {
			seen[err.Error()] = true
			out = append(out, err)
		}
	}
	return errors.Join(out...)
}

// keepMinIdle runs periodically while the pool lives. It checks out up to
// MinIdleConns connections together and returns them, which both re-opens
// connections database/sql closed and makes the most recently used ones
// fresh again, so that only the surplus ones expire by idle time. It takes
// no more than the pool has free when it starts; if users take the rest
// meanwhile, the connections it holds could make them wait, so a round
// gives up after keepIdleRound and the next one tries again.
func (p *pool) keepMinIdle(ctx context.Context) {
	if p.db == nil || p.tracker.draining.Load() {
		return
	}
	st := p.db.Stats()
	n := min(p.cfg.minIdle, st.MaxOpenConnections-st.InUse)
	if n <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, min(p.cfg.warmUpTimeout, keepIdleRound))
	defer cancel()
	if err := p.warmUp(ctx, n); err != nil && ctx.Err() == nil {
		msg, attrs := fitLine("pgxleak: keeping idle connections (WithMinIdleConns)", []slog.Attr{slog.String("pool", p.name()), slog.Any("error", err)})
		p.logger().LogAttrs(ctx, slog.LevelWarn, msg, attrs...)
	}
}

// keepIdleRound bounds one round of keepMinIdle, and so how long it can
// hold connections that users are waiting for.
const keepIdleRound = 2 * time.Second
