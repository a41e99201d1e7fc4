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
// driverName, tracks every checkout of its connections, and applies the pool
// tuning in opts over pgxleak's defaults (see [WithMaxOpenConns] and the
// other options).
//
// The common case is "pgx", the name pgx v5's stdlib registers unless
// another driver (pgx v4's stdlib, for one) took it first; Open wraps
// whichever driver holds the name, as sql.Open would use it. "pgx/v5" is
// always pgx v5's, and "pgxleak" (the name pgxleak registers its
// driver under) means pgx v5's too. Over
// pgx v5's driver, Open parses the DSN once, and a DSN pgx cannot parse
// (a bad port, an unknown sslmode, "not a dsn") is an error from Open, where
// sql.Open would report it only at the first connect; its text has the
// DSN's passwords masked, and errors.As still finds pgx's
// *pgconn.ParseConfigError. The names [stdlib.RegisterConnConfig] returns
// are looked up by pgx's driver, not parsed. Other drivers' DSNs are theirs
// to read: Open passes them on unparsed, and such a pool has no name
// unless [WithPoolName] gives one.
//
// Over pgx v5's driver, Open sets the sessions' application_name, unless
// the DSN (or PGAPPNAME) sets one, to "service/instance/pool"
// ("orders-api/web-7f9c-4121/primary", at most 63 bytes), so that
// pg_stat_activity, [CheckCapacity] and [Inspection].Server (and the live
// page, package livepage) can tell the services, instances and pools
// sharing a server apart. The service is OTEL_SERVICE_NAME (or
// service.name in OTEL_RESOURCE_ATTRIBUTES), else the program's name; the
// instance is service.instance.id in OTEL_RESOURCE_ATTRIBUTES, else the
// host name's first label and the PID; the pool is the [WithPoolName]
// name, left out without one. pgxleak's metrics carry the same
// service.name and service.instance.id.
// sql.Open("pgxleak", dsn) does the same without a pool name.
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
	d, err := registeredDriver(driverName, dsn)
	if err != nil {
		return nil, fmt.Errorf("pgxleak: Open: %w", redactError(err, dsnSecrets(dsn, nil)))
	}
	var info dsnInfo
	if _, ok := d.(*stdlib.Driver); ok {
		info, err = parseDSN(dsn)
		if err != nil && !registeredConfigName(dsn) {
			return nil, fmt.Errorf("pgxleak: Open: %w", redactError(err, info.secrets))
		}
		info.setApplicationName(cfg.poolName)
	} else {
		info.secrets = dsnSecrets(dsn, nil) // another driver's DSN: not pgx's to parse
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

// registeredDriver returns the driver registered as name. pgxleak's own
// name and "pgx/v5" are pgx v5's driver (pgx registers "pgx/v5"
// unconditionally, so no other driver can hold it). For any other name,
// "pgx" included, it asks database/sql: it has no lookup of a registered
// driver but sql.Open, which only asks a [driver.DriverContext] for a
// connector (pgx's parses nothing there) and starts the pool's opener
// goroutine; the probe never connects, and closing it stops that goroutine.
func registeredDriver(name, dsn string) (driver.Driver, error) {
	if name == registeredName || name == "pgx/v5" {
		return stdlib.GetDefaultDriver(), nil
	}
	probe, err := sql.Open(name, dsn)
	if err != nil {
		return nil, err
	}
	d := probe.Driver()
	_ = probe.Close()
	return d, nil
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
