package pgxleak

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// DriverName is the name pgxleak registers its driver under, so that
// sql.Open(pgxleak.DriverName, dsn) accepts every DSN pgx accepts.
const DriverName = "pgxleak"

//go:generate go run ./internal/wrapgen

func init() {
	sql.Register(DriverName, &Driver{inner: stdlib.GetDefaultDriver()})
}

// Driver is a database/sql driver that wraps another driver, by default pgx
// v5's stdlib driver, and tracks every checkout of its connections.
//
// The Driver registered as "pgxleak" opens a new, separately tracked pool for
// every sql.Open. The Driver returned by (*sql.DB).Driver for a pool opened by
// pgxleak carries that pool's state; that is how Stats, Checkouts, Drain and
// VerifyNone find it from the *sql.DB alone.
type Driver struct {
	inner   driver.Driver
	tracker *tracker // nil for the registered driver
}

// Open opens a connection with the wrapped driver, without tracking it.
// database/sql never calls it, because Driver implements
// [driver.DriverContext]; it exists to satisfy [driver.Driver].
func (d *Driver) Open(name string) (driver.Conn, error) {
	return d.wrapped().Open(name)
}

// wrapped returns the wrapped driver; the zero Driver wraps pgx's.
func (d *Driver) wrapped() driver.Driver {
	if d.inner == nil {
		return stdlib.GetDefaultDriver()
	}
	return d.inner
}

// OpenConnector returns a connector for the DSN name whose connections are
// tracked in a new pool with the default options. It is what
// sql.Open("pgxleak", dsn) calls. Pool tuning needs the *sql.DB, which a
// driver never sees, so such a pool keeps database/sql's limits; only the
// per-connection lifetime ([DefaultConnMaxLifetime], jittered), which the
// wrapper enforces itself, applies. Use [Open] for the tuned defaults.
func (d *Driver) OpenConnector(name string) (driver.Connector, error) {
	cfg, err := newConfig(nil)
	if err != nil {
		return nil, err
	}
	// database/sql's contract is lazy: a DSN pgx cannot parse is not an
	// error here but at the first connect, where pgx's driver parses it
	// again and reports it (with the password masked, see connector).
	dsn, _ := parseDSN(name)
	dsn.setApplicationName("")
	c, err := connectorFor(d.wrapped(), name, dsn, false)
	if err != nil {
		return nil, err
	}
	t := newTracker(cfg, dsn.poolName)
	t.start()
	return newConnector(c, t, dsn.secrets), nil
}

// Open opens a database like [sql.Open], over the driver registered as
// driverName, tracks every checkout of its connections, and applies the pool
// tuning in opts over pgxleak's defaults (see [WithMaxOpenConns] and the
// other options).
//
// The common case is "pgx", the name pgx v5's stdlib registers unless
// another driver (pgx v4's stdlib, for one) took it first; Open wraps
// whichever driver holds the name, as sql.Open would use it. "pgx/v5" is
// always pgx v5's, and "pgxleak" ([DriverName]) means pgx v5's too. Over
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
// pg_stat_activity, [CheckCapacity] and the live page ([Handler]) can tell
// the services, instances and pools sharing a server apart. The service is
// OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES), else
// the program's name; the instance is service.instance.id in
// OTEL_RESOURCE_ATTRIBUTES, else the host name's first label and the PID;
// the pool is the [WithPoolName] name, left out without one. pgxleak's
// metrics carry the same service.name and service.instance.id.
// sql.Open("pgxleak", dsn) does the same without a pool name.
//
// Unlike sql.Open, Open connects when [WithMinIdleConns] asks for warm
// connections, and then fails if the server is unreachable, and when
// [WithCapacityCheck] asks for the server's limits. The returned
// *sql.DB is an ordinary one; the caller must Close it (or [Drain] it).
func Open(driverName, dsn string, opts ...Option) (*sql.DB, error) {
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
	return openDB(c, cfg, info.poolName, info.secrets)
}

// registeredDriver returns the driver registered as name. pgxleak's own
// name and "pgx/v5" are pgx v5's driver (pgx registers "pgx/v5"
// unconditionally, so no other driver can hold it). For any other name,
// "pgx" included, it asks database/sql: it has no lookup of a registered
// driver but sql.Open, which only asks a [driver.DriverContext] for a
// connector (pgx's parses nothing there) and starts the pool's opener
// goroutine; the probe never connects, and closing it stops that goroutine.
func registeredDriver(name, dsn string) (driver.Driver, error) {
	if name == DriverName || name == "pgx/v5" {
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

// registeredConfigName reports whether dsn has the form of the names pgx's
// [stdlib.RegisterConnConfig] returns ("registeredConnConfig0"), which pgx's
// driver looks up instead of parsing.
func registeredConfigName(dsn string) bool {
	n, ok := strings.CutPrefix(dsn, "registeredConnConfig")
	if !ok || n == "" {
		return false
	}
	_, err := strconv.ParseUint(n, 10, 64)
	return err == nil
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
	return openDB(c, cfg, "", secrets)
}

func openDB(c driver.Connector, cfg *config, defaultName string, secrets []string) (*sql.DB, error) {
	t := newTracker(cfg, defaultName)
	db := sql.OpenDB(newConnector(c, t, secrets))
	t.db = db
	// The monitor starts after the warm-up: its keep-idle task holds
	// connections while waiting for more, as the warm-up does, and the two
	// at once can deadlock a small pool. Close copes with a pool whose
	// monitor never started.
	if err := t.tune(db); err != nil {
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

// dsnInfo is what pgxleak reads from a DSN, parsed once per Open.
type dsnInfo struct {
	pgx      *pgx.ConnConfig // nil unless pgx v5 parsed it (another driver's DSN, a registered config's name, a malformed one)
	secrets  []string        // the passwords to mask in errors (see dsnSecrets)
	poolName string          // "host:port/database", never with credentials; "" when unparsed
}

// parseDSN parses dsn as pgx v5 does. The error is pgx's, its text not yet
// masked; info.secrets is set either way.
func parseDSN(dsn string) (dsnInfo, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return dsnInfo{secrets: dsnSecrets(dsn, nil)}, err
	}
	return dsnInfo{
		pgx:      cfg,
		secrets:  dsnSecrets(dsn, cfg),
		poolName: fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database),
	}, nil
}

// connectorFor returns the connector for dsn over d. Over pgx's driver it
// connects with the configuration parsed already (and, for WithPgBouncer,
// a query exec mode PgBouncer can work with); otherwise it asks d, the way
// database/sql does. Errors are the driver's own, with the DSN's passwords
// masked: a DSN that does not parse is quoted back with best-effort
// redaction only.
func connectorFor(d driver.Driver, dsn string, info dsnInfo, pgBouncer bool) (driver.Connector, error) {
	if _, ok := d.(*stdlib.Driver); ok && info.pgx != nil {
		cfg := info.pgx
		if pgBouncer {
			if err := pgBouncerExecMode(cfg, dsn); err != nil {
				return nil, err
			}
		}
		return stdlib.GetConnector(*cfg), nil
	}
	if dc, ok := d.(driver.DriverContext); ok {
		c, err := dc.OpenConnector(dsn)
		if err != nil {
			return nil, redactError(err, info.secrets)
		}
		return c, nil
	}
	return dsnConnector{name: dsn, driver: d}, nil
}

type dsnConnector struct {
	name   string
	driver driver.Driver
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.driver.Open(c.name) }

func (c dsnConnector) Driver() driver.Driver { return c.driver }

// trackerOf returns the tracker behind db, or nil if db was not opened
// through pgxleak.
func trackerOf(db *sql.DB) *tracker {
	if db == nil {
		return nil
	}
	if d, ok := db.Driver().(*Driver); ok {
		return d.tracker
	}
	return nil
}

// ErrNotTracked is returned by [Drain], [Find] and [Inspect] for a *sql.DB
// that was not opened through pgxleak.
var ErrNotTracked = errors.New("pgxleak: this *sql.DB was not opened by pgxleak (use pgxleak.Open, pgxleak.OpenDB or sql.Open(\"pgxleak\", dsn))")
