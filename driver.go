package pgxleak

// The adapter: the registered driver, the connector, and the wrappers
// database/sql talks to (conn.go, stmt.go, tx.go, rows.go). The wrappers that
// mirror database/sql's optional interfaces exactly are generated.

//go:generate go run ./internal/wrapgen

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"runtime"

	"github.com/jackc/pgx/v5/stdlib"
)

// registeredName is the name pgxleak registers its driver under, so that
// sql.Open("pgxleak", dsn) accepts every DSN pgx accepts.
const registeredName = "pgxleak"

func init() {
	sql.Register(registeredName, &sqlDriver{inner: stdlib.GetDefaultDriver()})
}

// sqlDriver is a database/sql driver that wraps another driver, by default
// pgx v5's stdlib driver, and tracks every checkout of its connections.
//
// The sqlDriver registered as "pgxleak" opens a new, separately tracked pool
// for every sql.Open. The one (*sql.DB).Driver returns for a pool opened by
// pgxleak carries that pool's state; that is how Stats, Checkouts, Drain and
// VerifyNone find it from the *sql.DB alone.
type sqlDriver struct {
	inner driver.Driver
	pool  *pool // nil for the registered driver
}

// Open opens a connection with the wrapped driver, without tracking it.
// database/sql never calls it, because sqlDriver implements
// [driver.DriverContext]; it exists to satisfy [driver.Driver].
func (d *sqlDriver) Open(name string) (driver.Conn, error) {
	return d.wrapped().Open(name)
}

// wrapped returns the wrapped driver; the zero sqlDriver wraps pgx's.
func (d *sqlDriver) wrapped() driver.Driver {
	if d.inner == nil {
		return stdlib.GetDefaultDriver()
	}
	return d.inner
}

// OpenConnector returns a connector for the DSN name whose connections are
// tracked in a new pool with the default options. It is what
// sql.Open("pgxleak", dsn) calls. Pool tuning needs the *sql.DB, which a
// driver never sees, so such a pool keeps database/sql's limits and
// lifetime (none unless db.SetConnMaxLifetime sets one), exactly as
// sql.Open("pgx", dsn) does. Use [Open] for the tuned defaults.
func (d *sqlDriver) OpenConnector(name string) (driver.Connector, error) {
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
	t := newPool(cfg, dsn.poolName)
	t.start()
	return newConnector(c, t, dsn.secrets), nil
}

// connector wraps the user's connector. It is an io.Closer, so that
// (*sql.DB).Close stops the pool's monitor and reports what is still out.
type connector struct {
	inner   driver.Connector
	pool    *pool
	driver  *sqlDriver
	secrets []string // the DSN's passwords, masked in connection errors (see redactError)
}

func newConnector(c driver.Connector, t *pool, secrets []string) *connector {
	return &connector{inner: c, pool: t, driver: &sqlDriver{inner: c.Driver(), pool: t}, secrets: secrets}
}

// Connect opens a connection with the wrapped connector. When the caller is
// database/sql on a user's goroutine (not its background opener), the new
// connection is checked out right away and the checkout is recorded here.
func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	p := c.pool
	if p.tracker.draining.Load() {
		return nil, ErrDraining
	}
	start := p.now()
	cctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		// database/sql's background opener connects with a context only
		// Close ends (sql.go: OpenDB, connectionOpener), and so does a
		// caller without a deadline. One connection attempt the network
		// swallows would then hold that single opener goroutine, and a
		// pool slot, until the kernel gives up: bound it like the warm-up.
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, p.cfg.warmUpTimeout)
		defer cancel()
	}
	inner, err := c.inner.Connect(cctx)
	if err != nil {
		// A DSN that does not parse is quoted back with best-effort
		// redaction only, and the server may echo a misplaced one.
		return nil, redactError(err, c.secrets)
	}
	// The draining check and the recording of the connection are one
	// step for Drain: handingOut counts this call from before the check
	// until the connection is tracked (and, for a caller, checked out), so
	// either Drain sees it and waits, or this sees Drain and refuses. No
	// I/O happens in between, so Drain never waits long; the connecting
	// above is not counted, since its end is refused if Drain began.
	p.tracker.handingOut.Add(1)
	if p.tracker.draining.Load() {
		p.tracker.handingOut.Add(-1)
		_ = inner.Close()
		return nil, ErrDraining
	}
	wc := newConn(p, inner)
	now := p.now()
	p.tel.observeCreate(now - start) // after register, which may name the pool
	wc.mu.Lock()
	if calledByOpener() {
		// database/sql hands it to a waiter, or to a later caller, with
		// no driver call on their goroutine: see use and unseenCheckouts.
		wc.idleSince, wc.pristine = now, true
	} else {
		wc.checkoutLocked(ctx)
	}
	wc.mu.Unlock()
	p.tracker.handingOut.Add(-1)
	return wc.wrapper, nil
}

// Driver returns the pool's Driver, through which (*sql.DB).Driver leads
// back to the pool.
func (c *connector) Driver() driver.Driver { return c.driver }

// Close is called by (*sql.DB).Close after it closed the idle connections.
func (c *connector) Close() error {
	c.pool.close()
	if cl, ok := c.inner.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// calledByOpener reports whether Connect runs on database/sql's background
// connectionOpener, which opens connections for waiting callers with no
// caller context. Connect is rare and slow, so symbolising here is cheap.
func calledByOpener() bool {
	var pcs [24]uintptr
	n := runtime.Callers(3, pcs[:])
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if f.Function == "database/sql.(*DB).openNewConnection" {
			return true
		}
		if f.Function == "database/sql.(*DB).conn" || !more {
			return false
		}
	}
}

// poolOf returns the pool behind db, or nil if db was not opened
// through pgxleak.
func poolOf(db *sql.DB) *pool {
	if db == nil {
		return nil
	}
	if d, ok := db.Driver().(*sqlDriver); ok {
		return d.pool
	}
	return nil
}

// ErrNotTracked is returned by [Stats], [Checkouts], [Inspect], [Drain],
// [Find] and [Terminate] for a *sql.DB that was not opened through pgxleak.
var ErrNotTracked = errors.New("pgxleak: this *sql.DB was not opened by pgxleak (use pgxleak.Open, pgxleak.OpenDB or sql.Open(\"pgxleak\", dsn))")
