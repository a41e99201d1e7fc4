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
// the warm-up and the capacity check, both bounded by ctx (the capacity
// check only warns, unless ctx ended). database/sql enforces the limits,
// the lifetime included, so a later db.SetMaxOpenConns, SetMaxIdleConns,
// SetConnMaxLifetime or SetConnMaxIdleTime works as on a plain pool;
// pgxleak adds only the jitter, which shortens its own lifetime while that
// is in force (see jitterDue), and reads back what is in force for the
// rest (see limits.go).
func (p *pool) tune(ctx context.Context, db *sql.DB) error {
	c := p.cfg
	db.SetMaxOpenConns(c.maxOpen)
	db.SetMaxIdleConns(c.maxIdle)
	db.SetConnMaxLifetime(c.maxLifetime)
	db.SetConnMaxIdleTime(c.maxIdleTime)
	p.jitter.Store(p.fields.ok && c.jittered())
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
// fresh again, so that only the surplus ones expire by idle time. It
// follows the limits in force: no more than database/sql keeps idle (more
// would be closed at their return, and re-opened every round), and no more
// than the pool has free when it starts. If users take the rest meanwhile,
// the connections it holds could make them wait, so a round gives up after
// keepIdleRound and the next one tries again.
func (p *pool) keepMinIdle(ctx context.Context) {
	if p.db == nil || p.tracker.draining.Load() {
		return
	}
	l := p.limits()
	n := p.minIdle(l)
	if l.maxOpen > 0 {
		n = min(n, l.maxOpen-p.db.Stats().InUse)
	}
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

// keepIdleEvery is the min-idle keeper's period under the idle time in
// force: defaultKeepIdleEvery, or half the idle time if that is shorter,
// so that kept connections never reach it.
func keepIdleEvery(idleTime time.Duration) time.Duration {
	if idleTime > 0 && idleTime/2 < defaultKeepIdleEvery {
		return max(idleTime/2, 10*time.Millisecond)
	}
	return defaultKeepIdleEvery
}
