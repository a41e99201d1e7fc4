package pgxleak

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Defaults applied by [Open] and [OpenDB] when an option is not given.
// database/sql's own defaults (unlimited open connections, 2 idle, kept
// forever) let a traffic spike open hundreds of connections, then close all
// but two of them, then open them again on the next spike.
var (
	// DefaultMaxOpenConns is max(4, 2×GOMAXPROCS at start). A pool should be a
	// small multiple of the server's cores ("connections = cores × 2 +
	// spindles"); the client's cores are the best guess available without
	// asking the server, and a small pool saturated with waiting goroutines
	// outperforms a large one contending on the server.
	DefaultMaxOpenConns = max(4, 2*runtime.GOMAXPROCS(0))

	// DefaultConnMaxLifetime is 30 minutes: long enough that reconnecting
	// costs nothing measurable, short enough that connections pick up
	// failovers, DNS changes and server-side memory growth is bounded.
	DefaultConnMaxLifetime = 30 * time.Minute

	// DefaultConnMaxIdleTime is 5 minutes: after a spike, surplus connections
	// are given back to the server within minutes, not kept forever.
	DefaultConnMaxIdleTime = 5 * time.Minute
)

// The defaults that follow from other settings:
//   - MaxIdleConns defaults to MaxOpenConns, so that load never churns
//     connections: a connection returned under load is kept, not closed.
//   - ConnMaxLifetimeJitter defaults to a tenth of ConnMaxLifetime, so that
//     connections opened together (at start-up, after a failover) do not all
//     reconnect at the same moment.
//   - MinIdleConns defaults to 0, so that Open, like sql.Open, does not
//     connect; set it to warm the pool up before the first request.
//   - MaxUses defaults to 0, unlimited.

func defaultConfig() *config {
	return &config{
		maxOpen:        DefaultMaxOpenConns,
		maxLifetime:    DefaultConnMaxLifetime,
		maxIdleTime:    DefaultConnMaxIdleTime,
		warmUpTimeout:  30 * time.Second,
		leakThreshold:  DefaultLeakThreshold,
		stackDepth:     DefaultStackDepth,
		sampleEvery:    1,
		reportInterval: time.Minute,
		statements:     true,
		gcDetection:    true,
		waitInterval:   time.Second,
	}
}

// resolve fills the defaults that depend on other settings and checks the
// combination.
func (c *config) resolve() {
	if !c.maxIdleSet {
		c.maxIdle = c.maxOpen
	}
	if !c.jitterSet {
		c.lifetimeJitter = c.maxLifetime / 10
	}
	if c.maxIdle > c.maxOpen {
		c.invalid("WithMaxIdleConns", c.maxIdle, fmt.Sprintf("more idle connections than WithMaxOpenConns(%d) allows", c.maxOpen))
	}
	if c.minIdle > c.maxIdle {
		c.invalid("WithMinIdleConns", c.minIdle, fmt.Sprintf("more than the %d idle connections the pool may keep (WithMaxIdleConns)", c.maxIdle))
	}
	if c.lifetimeJitter > 0 && c.maxLifetime == 0 {
		c.invalid("WithConnMaxLifetimeJitter", c.lifetimeJitter, "jitter needs a finite WithConnMaxLifetime")
	}
	if c.maxLifetime > 0 && c.lifetimeJitter > c.maxLifetime {
		c.invalid("WithConnMaxLifetimeJitter", c.lifetimeJitter, fmt.Sprintf("larger than WithConnMaxLifetime(%v)", c.maxLifetime))
	}
	if c.keepIdleEvery == 0 {
		c.keepIdleEvery = 30 * time.Second
		if c.maxIdleTime > 0 && c.maxIdleTime/2 < c.keepIdleEvery {
			c.keepIdleEvery = max(c.maxIdleTime/2, 10*time.Millisecond)
		}
	}
}

// WithMaxOpenConns limits the number of open connections, in use plus idle
// (see [sql.DB.SetMaxOpenConns]). n must be at least 1. Default:
// [DefaultMaxOpenConns]. Keep instances × n below the server's
// max_connections with headroom; [CheckCapacity] does the arithmetic.
func WithMaxOpenConns(n int) Option {
	return optionFunc(func(c *config) {
		if n < 1 {
			c.invalid("WithMaxOpenConns", n, "must be at least 1")
			return
		}
		c.maxOpen = n
	})
}

// WithMaxIdleConns sets how many idle connections the pool keeps (see
// [sql.DB.SetMaxIdleConns]). It must be between 0 and the maximum of open
// connections. Default: equal to the maximum of open connections.
func WithMaxIdleConns(n int) Option {
	return optionFunc(func(c *config) {
		if n < 0 {
			c.invalid("WithMaxIdleConns", n, "must not be negative")
			return
		}
		c.maxIdle, c.maxIdleSet = n, true
	})
}

// WithMinIdleConns makes Open warm up n connections, concurrently, before it
// returns, and then keeps at least n connections idle for as long as the pool
// lives: a background task re-opens the ones that database/sql closes
// (idle time, lifetime, errors) and keeps n of them from going idle for
// longer than ConnMaxIdleTime. database/sql has no such setting. Open fails
// if n > 0 and the server is unreachable. Default: 0.
func WithMinIdleConns(n int) Option {
	return optionFunc(func(c *config) {
		if n < 0 {
			c.invalid("WithMinIdleConns", n, "must not be negative")
			return
		}
		c.minIdle = n
	})
}

// WithConnMaxLifetime closes connections that have been open longer than d
// (see [sql.DB.SetConnMaxLifetime]); 0 keeps them forever. Each connection's
// lifetime is shortened by a random part of the jitter
// ([WithConnMaxLifetimeJitter]), so d is the maximum. Default:
// [DefaultConnMaxLifetime].
func WithConnMaxLifetime(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d < 0 {
			c.invalid("WithConnMaxLifetime", d, "must not be negative")
			return
		}
		c.maxLifetime = d
	})
}

// WithConnMaxLifetimeJitter gives each connection a lifetime drawn uniformly
// from [lifetime−d, lifetime], so that connections opened together do not
// all reconnect together. An expired connection is discarded when it is
// returned, or when it is checked out again if the driver implements
// driver.SessionResetter (pgx does); database/sql's own cleaner closes idle
// ones at the full lifetime. d must not exceed the lifetime. Default: a
// tenth of the lifetime.
func WithConnMaxLifetimeJitter(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d < 0 {
			c.invalid("WithConnMaxLifetimeJitter", d, "must not be negative")
			return
		}
		c.lifetimeJitter, c.jitterSet = d, true
	})
}

// WithConnMaxIdleTime closes connections that have been idle longer than d
// (see [sql.DB.SetConnMaxIdleTime]), except the ones [WithMinIdleConns]
// keeps; 0 keeps them forever. Default: [DefaultConnMaxIdleTime].
func WithConnMaxIdleTime(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d < 0 {
			c.invalid("WithConnMaxIdleTime", d, "must not be negative")
			return
		}
		c.maxIdleTime = d
	})
}

// WithMaxUses discards a connection after it has been checked out n times,
// bounding the server-side state (caches, prepared statements, memory) a
// long-lived connection accumulates; 0 means unlimited. Default: 0.
func WithMaxUses(n int64) Option {
	return optionFunc(func(c *config) {
		if n < 0 {
			c.invalid("WithMaxUses", n, "must not be negative")
			return
		}
		c.maxUses = n
	})
}

// WithPoolName names the pool in reports, spans and metrics
// (db.client.connection.pool.name). Default: "host:port/database" from the
// DSN or the first connection, never with credentials.
func WithPoolName(name string) Option {
	return optionFunc(func(c *config) {
		if name == "" {
			c.invalid("WithPoolName", `""`, "must not be empty")
			return
		}
		c.poolName = name
	})
}

// WithCapacityCheck makes Open run [CheckCapacity] for the given number of
// application instances sharing the server, and log a warning through
// log/slog (the [WithLogger] logger) if the pools would not fit.
func WithCapacityCheck(instances int) Option {
	return optionFunc(func(c *config) {
		if instances < 1 {
			c.invalid("WithCapacityCheck", instances, "must be at least 1")
			return
		}
		c.checkInstances = instances
	})
}

// tune applies the configuration to db: database/sql's own settings, then
// the warm-up and the capacity check.
func (p *pool) tune(db *sql.DB) error {
	c := p.cfg
	db.SetMaxOpenConns(c.maxOpen)
	db.SetMaxIdleConns(c.maxIdle)
	db.SetConnMaxLifetime(c.maxLifetime)
	db.SetConnMaxIdleTime(c.maxIdleTime)
	if c.minIdle > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), c.warmUpTimeout)
		defer cancel()
		if err := p.warmUp(ctx, c.minIdle); err != nil {
			return fmt.Errorf("pgxleak: warming up %d connections (WithMinIdleConns): %w", c.minIdle, err)
		}
	}
	if c.checkInstances > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		capa, err := CheckCapacity(&internalContext{ctx}, db, c.checkInstances) // not a user checkout
		switch {
		case err != nil:
			p.logger().Warn("pgxleak: capacity check failed", slog.String("pool", p.name()), slog.Any("error", err))
		case !capa.Fits:
			p.logger().Warn("pgxleak: "+capa.String(), slog.String("pool", p.name()))
		}
	}
	return nil
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
	return errors.Join(errs...)
}

// keepMinIdle runs periodically while the pool lives. It checks out up to
// MinIdleConns connections together and returns them, which both re-opens
// connections database/sql closed and makes the most recently used ones
// fresh again, so that only the surplus ones expire by idle time. It takes
// no more than the pool has free when it starts; if users take the rest
// meanwhile, the connections it holds could make them wait, so a round
// gives up after keepIdleRound and the next one tries again.
func (p *pool) keepMinIdle(ctx context.Context) {
	if p.db == nil || p.draining.Load() {
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
		p.logger().Warn("pgxleak: keeping idle connections (WithMinIdleConns)", slog.String("pool", p.name()), slog.Any("error", err))
	}
}

// keepIdleRound bounds one round of keepMinIdle, and so how long it can
// hold connections that users are waiting for.
const keepIdleRound = 2 * time.Second

// Capacity is the result of [CheckCapacity].
type Capacity struct {
	MaxConnections      int // the server's max_connections
	ReservedConnections int // superuser_reserved_connections + reserved_connections
	Available           int // MaxConnections − ReservedConnections
	Headroom            int // kept free for admin sessions, migrations and other clients: max(3, Available/10)
	InUse               int // client backends connected now, from pg_stat_activity
	PoolMax             int // this pool's MaxOpenConnections (0 means unlimited)
	Instances           int // application instances, as given
	Demand              int // Instances × PoolMax
	Fits                bool
}

// String summarises the check, e.g. "4 instances × 10 connections = 40 fit
// in 87 of max_connections 100 (97 available, 10 headroom)".
func (c Capacity) String() string {
	budget := c.Available - c.Headroom
	if c.PoolMax == 0 {
		return fmt.Sprintf("pool has no connection limit; %d instances could exceed max_connections %d (%d available, %d headroom)",
			c.Instances, c.MaxConnections, c.Available, c.Headroom)
	}
	verb := "fit"
	if !c.Fits {
		verb = "do not fit"
	}
	return fmt.Sprintf("%d instances × %d connections = %d %s in %d of max_connections %d (%d available, %d headroom, %d in use now)",
		c.Instances, c.PoolMax, c.Demand, verb, budget, c.MaxConnections, c.Available, c.Headroom, c.InUse)
}

// CheckCapacity reads the server's max_connections,
// superuser_reserved_connections and (PostgreSQL 16+) reserved_connections,
// and the client backends in pg_stat_activity, and reports whether
// instances pools the size of db's MaxOpenConnections fit with headroom.
// It needs one connection from db for one query.
func CheckCapacity(ctx context.Context, db *sql.DB, instances int) (Capacity, error) {
	if db == nil {
		return Capacity{}, errors.New("pgxleak: CheckCapacity: nil *sql.DB")
	}
	if instances < 1 {
		return Capacity{}, fmt.Errorf("pgxleak: CheckCapacity: instances must be at least 1, got %d", instances)
	}
	c := Capacity{Instances: instances, PoolMax: db.Stats().MaxOpenConnections}
	const q = `SELECT
		current_setting('max_connections')::int,
		current_setting('superuser_reserved_connections')::int
		  + coalesce(current_setting('reserved_connections', true)::int, 0),
		(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int`
	if err := db.QueryRowContext(ctx, q).Scan(&c.MaxConnections, &c.ReservedConnections, &c.InUse); err != nil {
		return Capacity{}, fmt.Errorf("pgxleak: CheckCapacity: %w", err)
	}
	c.Available = c.MaxConnections - c.ReservedConnections
	c.Headroom = max(3, c.Available/10)
	c.Demand = instances * c.PoolMax
	c.Fits = c.PoolMax > 0 && c.Demand <= c.Available-c.Headroom
	return c, nil
}

// poolNameFromDSN returns "host:port/database" for a DSN pgx can parse, and
// "" otherwise. It never includes credentials.
func poolNameFromDSN(dsn string) string {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
}
