package pgxleak

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5/stdlib"
)

// Open opens a database like [sql.Open], over the driver registered as
// driverName ("pgx" for pgx v5's stdlib is the common case; "pgxleak" means
// the same), tracks every checkout of its connections, and applies the pool
// tuning in opts over pgxleak's defaults (see [WithMaxOpenConns] and the
// other options).
//
// Over pgx's driver, Open sets the sessions' application_name, unless the
// DSN (or PGAPPNAME) sets one, to the program's name followed by
// "/" and the [WithPoolName] name if there is one ("orders-api/primary"),
// so that pg_stat_activity, [CheckCapacity] and [Inspection].Server (and the
// live page, package livepage)
// can tell the programs and pools sharing a server apart.
// sql.Open("pgxleak", dsn) does the same with the program's name.
//
// Unlike sql.Open, Open connects when [WithMinIdleConns] asks for warm
// connections, and then fails if the server is unreachable, and when
// [WithCapacityCheck] asks for the server's limits. It waits at most 30
// seconds for all of it (one connect that the network swallows would
// otherwise wait until the kernel gives up); [OpenContext] sets the limit.
// The returned *sql.DB is an ordinary one; the caller must Close it (or
// [Drain] it).
func Open(driverName, dsn string, opts ...Option) (*sql.DB, error) {
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	return OpenContext(ctx, driverName, dsn, opts...)
}

// OpenContext is [Open] bounded by ctx instead of Open's 30 seconds: the
// warm-up ([WithMinIdleConns]), its connects and the capacity check
// ([WithCapacityCheck]) end when ctx does, and OpenContext then returns an
// error that wraps ctx.Err(), leaving no connection open. ctx bounds only
// the opening: the returned *sql.DB outlives it.
func OpenContext(ctx context.Context, driverName, dsn string, opts ...Option) (*sql.DB, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	info := parseDSN(dsn)
	info.setApplicationName(cfg.poolName)
	var d driver.Driver
	switch driverName {
	case registeredName, "pgx", "pgx/v5":
		d = stdlib.GetDefaultDriver()
	default:
		// database/sql has no lookup of a registered driver but sql.Open,
		// which only records the name and starts the opener goroutine.
		probe, err := sql.Open(driverName, dsn)
		if err != nil {
			return nil, fmt.Errorf("pgxleak: Open: %w", redactError(err, info.secrets))
		}
		d = probe.Driver()
		_ = probe.Close() // it never connected; closing only stops its goroutine
	}
	if err := sessionGuards(cfg, d, info); err != nil {
		return nil, err
	}
	c, err := connectorFor(d, dsn, info, cfg.pgBouncer)
	if err != nil {
		return nil, err
	}
	return openDB(ctx, c, cfg, info.poolName, info.secrets)
}

// OpenDB opens a database over any [driver.Connector] (pgx's
// stdlib.GetConnector, go-sqlmock, lib/pq, ...), like [sql.OpenDB], with
// checkout tracking and the pool tuning in opts.
//
// Unlike [Open], it cannot set the sessions' application_name (the
// connector's configuration is the caller's); to make the pool visible in
// pg_stat_activity and on the live page's fleet, set it on the config:
//
//	cfg.RuntimeParams["application_name"] = "orders-api/primary"
func OpenDB(c driver.Connector, opts ...Option) (*sql.DB, error) {
	if c == nil {
		return nil, errors.New("pgxleak: OpenDB: nil connector")
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if cfg.idleInTx > 0 {
		return nil, errors.New(`pgxleak: OpenDB: WithIdleInTransactionTimeout cannot change a connector's configuration; set cfg.RuntimeParams["idle_in_transaction_session_timeout"] on the pgx.ConnConfig given to the connector`)
	}
	secrets := connectorSecrets(c)
	if cfg.pgBouncer {
		c = bouncerConnector{c}
	}
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	return openDB(ctx, c, cfg, "", secrets)
}

// openTimeout bounds [Open] and [OpenDB]: the warm-up and the capacity
// check. A variable for the tests.
var openTimeout = defaultConnectTimeout

func openDB(ctx context.Context, c driver.Connector, cfg *config, defaultName string, secrets []string) (*sql.DB, error) {
	t := newPool(cfg, defaultName)
	db := sql.OpenDB(newConnector(c, t, secrets))
	t.db = db
	// The monitor starts after the warm-up: its keep-idle task holds
	// connections while waiting for more, as the warm-up does, and the two
	// at once can deadlock a small pool. Close copes with a pool whose
	// monitor never started.
	if err := t.tune(ctx, db); err != nil {
		_ = db.Close()
		return nil, err
	}
	t.start()
	return db, nil
}

// sessionGuards sets the server-side session settings the options ask
// for on the parsed pgx configuration: they go in the startup message, so
// they cost no round trip.
func sessionGuards(cfg *config, d driver.Driver, info dsnInfo) error {
	if cfg.idleInTx == 0 {
		return nil
	}
	if _, ok := d.(*stdlib.Driver); !ok || info.pgx == nil {
		return errors.New("pgxleak: Open: WithIdleInTransactionTimeout needs pgx's driver and a DSN pgx parses; set idle_in_transaction_session_timeout in the DSN or on the server's role")
	}
	info.pgx.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(cfg.idleInTx.Milliseconds(), 10)
	return nil
}
