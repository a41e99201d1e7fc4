package pgxleak

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"

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
	inner driver.Driver
	pool  *pool // nil for the registered driver
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

// OpenConnector parses name with the wrapped driver and returns a connector
// whose connections are tracked in a new pool with the default options.
// It is what sql.Open("pgxleak", dsn) calls. Pool tuning needs the *sql.DB,
// which a driver never sees, so such a pool keeps database/sql's limits;
// only the per-connection lifetime ([DefaultConnMaxLifetime], jittered),
// which the wrapper enforces itself, applies. Use [Open] for the tuned
// defaults.
func (d *Driver) OpenConnector(name string) (driver.Connector, error) {
	secrets := dsnSecrets(name)
	c, err := connectorFor(d.wrapped(), name)
	if err != nil {
		return nil, redactError(err, secrets)
	}
	cfg, err := newConfig(nil)
	if err != nil {
		return nil, err
	}
	p := newPool(cfg, poolNameFromDSN(name))
	p.start()
	wc := newConnector(c, p)
	wc.secrets = secrets
	return wc, nil
}

// Open opens a database like [sql.Open], over the driver registered as
// driverName ("pgx" for pgx v5's stdlib is the common case; "pgxleak" means
// the same), tracks every checkout of its connections, and applies the pool
// tuning in opts over pgxleak's defaults (see [WithMaxOpenConns] and the
// other options).
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
	var d driver.Driver
	if driverName == DriverName {
		d = stdlib.GetDefaultDriver()
	} else {
		probe, err := sql.Open(driverName, dsn)
		if err != nil {
			return nil, fmt.Errorf("pgxleak: %w", redactError(err, dsnSecrets(dsn)))
		}
		d = probe.Driver()
		_ = probe.Close() // it never connected; closing only stops its goroutine
	}
	secrets := dsnSecrets(dsn)
	c, err := pgBouncerConnectorFor(d, dsn, opts)
	if c == nil && err == nil {
		c, err = connectorFor(d, dsn)
	}
	if err != nil {
		return nil, redactError(err, secrets) // the driver's own error, its password masked
	}
	return openDB(c, cfg, poolNameFromDSN(dsn), secrets...)
}

// OpenDB opens a database over any [driver.Connector] (pgx's
// stdlib.GetConnector, go-sqlmock, lib/pq, ...), like [sql.OpenDB], with
// checkout tracking and the pool tuning in opts.
func OpenDB(c driver.Connector, opts ...Option) (*sql.DB, error) {
	if c == nil {
		return nil, errors.New("pgxleak: OpenDB: nil connector")
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	return openDB(pgBouncerConnector(c, opts), cfg, "", connectorSecrets(c)...)
}

func openDB(c driver.Connector, cfg *config, defaultName string, secrets ...string) (*sql.DB, error) {
	p := newPool(cfg, defaultName)
	wc := newConnector(c, p)
	wc.secrets = secrets
	db := sql.OpenDB(wc)
	p.db = db
	// The monitor starts after the warm-up: its keep-idle task holds
	// connections while waiting for more, as the warm-up does, and the two
	// at once can deadlock a small pool. Close copes with a pool whose
	// monitor never started.
	if err := p.tune(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	p.start()
	return db, nil
}

// connectorFor returns d's connector for name, the way database/sql does.
func connectorFor(d driver.Driver, name string) (driver.Connector, error) {
	if dc, ok := d.(driver.DriverContext); ok {
		return dc.OpenConnector(name)
	}
	return dsnConnector{name: name, driver: d}, nil
}

type dsnConnector struct {
	name   string
	driver driver.Driver
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.driver.Open(c.name) }
func (c dsnConnector) Driver() driver.Driver                        { return c.driver }

// poolOf returns the pool state behind db, or nil if db was not opened
// through pgxleak.
func poolOf(db *sql.DB) *pool {
	if db == nil {
		return nil
	}
	if d, ok := db.Driver().(*Driver); ok {
		return d.pool
	}
	return nil
}

// errNotTracked is returned by the inspection functions for a *sql.DB that
// was not opened through pgxleak.
var errNotTracked = errors.New("pgxleak: this *sql.DB was not opened by pgxleak (use pgxleak.Open, pgxleak.OpenDB or sql.Open(\"pgxleak\", dsn))")

// connector wraps the user's connector. It is an io.Closer, so that
// (*sql.DB).Close stops the pool's monitor and reports what is still out.
type connector struct {
	inner   driver.Connector
	pool    *pool
	driver  *Driver
	secrets []string // the DSN's passwords, masked in connection errors (redact.go)
}

func newConnector(c driver.Connector, p *pool) *connector {
	return &connector{inner: c, pool: p, driver: &Driver{inner: c.Driver(), pool: p}}
}

// Connect opens a connection with the wrapped connector. When the caller is
// database/sql on a user's goroutine (not its background opener), the new
// connection is checked out right away and the checkout is recorded here.
func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	p := c.pool
	p.handingOut.Add(1) // before the draining check, so Drain sees it
	defer p.handingOut.Add(-1)
	if p.draining.Load() {
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
	if p.draining.Load() { // Drain began while connecting
		_ = inner.Close()
		return nil, ErrDraining
	}
	wc := p.newConn(inner)
	p.observeCreate(p.now() - start) // after newConn, which may name the pool
	if !calledByOpener() {
		wc.mu.Lock()
		wc.checkoutLocked(ctx)
		wc.mu.Unlock()
	}
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

// PgxConn returns the *pgx.Conn behind a driver connection, for COPY,
// LISTEN/NOTIFY and the rest of pgx's API. Use it inside (*sql.Conn).Raw:
//
//	err := conn.Raw(func(dc any) error {
//		pc, ok := pgxleak.PgxConn(dc)
//		if !ok {
//			return errors.New("not a pgx connection")
//		}
//		_, err := pc.CopyFrom(ctx, pgx.Identifier{"t"}, []string{"a"}, src)
//		return err
//	})
//
// It accepts pgxleak's wrapper, anything with an Unwrap() driver.Conn
// method around a pgx connection, and a bare *stdlib.Conn.
func PgxConn(dc any) (*pgx.Conn, bool) {
	for range 8 { // wrappers around wrappers, but never forever
		switch c := dc.(type) {
		case *stdlib.Conn:
			return c.Conn(), true
		case interface{ Unwrap() driver.Conn }:
			dc = c.Unwrap()
		default:
			return nil, false
		}
	}
	return nil, false
}

// conn is pgxleak's wrapper around a driver connection. The value handed to
// database/sql is conn.wrapper, which embeds *conn and implements exactly the
// optional interfaces of the wrapped connection (see wrap_gen.go).
type conn struct {
	connState
	inner   driver.Conn
	wrapper driver.Conn

	// The wrapper constructor for the last type of driver.Rows seen, so that
	// its optional interfaces are not probed on every query. Used inside
	// driver calls only, which database/sql serialises.
	rowsType reflect.Type
	rowsWrap func(r rows) (driver.Rows, *rows)
}

// Unwrap returns the wrapped driver connection, for code that used
// (*sql.Conn).Raw with a driver-specific type assertion.
func (c *conn) Unwrap() driver.Conn { return c.inner }

// Prepare implements [driver.Conn].
func (c *conn) Prepare(query string) (driver.Stmt, error) {
	if err := c.use(nil, query); err != nil {
		return nil, err
	}
	s, err := c.inner.Prepare(query)
	if err != nil {
		return nil, err
	}
	return c.wrapStmt(s, query), nil
}

// Close implements [driver.Conn]. It is one of the two ways a connection
// comes back: database/sql closes bad, expired and surplus connections.
func (c *conn) Close() error {
	c.pool.closeConn(&c.connState)
	return c.inner.Close()
}

// Begin implements [driver.Conn].
func (c *conn) Begin() (driver.Tx, error) { //nolint:staticcheck // the interface requires it
	if err := c.use(nil, "BEGIN"); err != nil {
		return nil, err
	}
	t, err := c.inner.Begin() //nolint:staticcheck
	if err != nil {
		return nil, err
	}
	return c.wrapTx(t), nil
}

// IsValid implements [driver.Validator]. database/sql calls it on every
// return that isn't already known to be bad, so this is where a return is
// recorded. A connection that is closed, still inside a transaction, past
// its jittered lifetime or past its maximum uses is reported invalid, and
// database/sql discards it.
func (c *conn) IsValid() bool {
	valid := true
	if v, ok := c.inner.(driver.Validator); ok && !v.IsValid() {
		valid = false
	}
	if c.pgx != nil {
		pc := c.pgx.PgConn()
		if pc.IsClosed() || pc.TxStatus() != 'I' {
			valid = false
		}
	}
	if c.checkin() {
		valid = false
	}
	return valid
}

type connPinger conn

func (c *connPinger) Ping(ctx context.Context) error {
	if err := c.use(ctx, ""); err != nil {
		return err
	}
	return c.inner.(driver.Pinger).Ping(ctx)
}

type connExecer conn

func (c *connExecer) Exec(query string, args []driver.Value) (driver.Result, error) {
	if err := c.use(nil, query); err != nil {
		return nil, err
	}
	r, err := c.inner.(driver.Execer).Exec(query, args) //nolint:staticcheck
	(*conn)(c).afterStatement()
	return r, err
}

type connExecerContext conn

func (c *connExecerContext) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if err := c.use(ctx, query); err != nil {
		return nil, err
	}
	r, err := c.inner.(driver.ExecerContext).ExecContext(ctx, query, args)
	(*conn)(c).afterStatement()
	return r, err
}

type connQueryer conn

func (c *connQueryer) Query(query string, args []driver.Value) (driver.Rows, error) {
	if err := c.use(nil, query); err != nil {
		return nil, err
	}
	r, err := c.inner.(driver.Queryer).Query(query, args) //nolint:staticcheck
	if err != nil {
		return nil, err
	}
	return (*conn)(c).wrapRows(nil, r), nil
}

type connQueryerContext conn

func (c *connQueryerContext) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if err := c.use(ctx, query); err != nil {
		return nil, err
	}
	r, err := c.inner.(driver.QueryerContext).QueryContext(ctx, query, args)
	if err != nil {
		return nil, err
	}
	return (*conn)(c).wrapRows(ctx, r), nil
}

type connPrepareContext conn

func (c *connPrepareContext) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if err := c.use(ctx, query); err != nil {
		return nil, err
	}
	s, err := c.inner.(driver.ConnPrepareContext).PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return (*conn)(c).wrapStmt(s, query), nil
}

type connBeginTx conn

func (c *connBeginTx) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if err := c.use(ctx, "BEGIN"); err != nil {
		return nil, err
	}
	t, err := c.inner.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return (*conn)(c).wrapTx(t), nil
}

type connSessionResetter conn

// ResetSession is where database/sql checks out an idle connection that has
// been used before. An expired connection, or any while the pool drains, is
// answered with ErrBadConn, which makes database/sql discard it and retry.
func (c *connSessionResetter) ResetSession(ctx context.Context) error {
	p := c.pool
	now := p.now() // one clock read for the expiry check and the checkout
	if !c.reusableAt(now) {
		return driver.ErrBadConn
	}
	// The wrapped reset first: a connection it finds dead (pgx pings one
	// idle for over a second) is closed by database/sql and never reaches
	// the caller, so it must not count as a checkout.
	err := c.inner.(driver.SessionResetter).ResetSession(ctx)
	if errors.Is(err, driver.ErrBadConn) {
		return err
	}
	// The draining check and the checkout are one step under the
	// connection's lock, and Drain, once it has set draining, takes every
	// connection's lock to count what is out: either Drain counts this
	// checkout and waits for its return, or this sees Drain and refuses.
	// (Connect counts itself in p.handingOut instead, because Drain cannot
	// see a connection before it exists; here that would cost every
	// checkout two atomic writes to a cache line all checkouts share.)
	c.mu.Lock()
	if p.draining.Load() {
		c.mu.Unlock()
		return driver.ErrBadConn
	}
	if c.state == stateIdle {
		c.checkoutAtLocked(ctx, now)
	}
	c.mu.Unlock()
	c.pool.tel.handoff(ctx) // a waiter handed this connection: attribute its wait (tracing.go)
	// database/sql hands the connection out despite any other error.
	return err
}

// Narrow interfaces for the optional methods that need no interception:
// the wrappers embed the wrapped value under these, so the methods are
// promoted straight from it.
type (
	namedValueChecker interface {
		CheckNamedValue(*driver.NamedValue) error
	}
	columnConverter interface {
		ColumnConverter(idx int) driver.ValueConverter
	}
	rowsNextResultSet interface {
		HasNextResultSet() bool
		NextResultSet() error
	}
	rowsColumnTypeScanType interface {
		ColumnTypeScanType(index int) reflect.Type
	}
	rowsColumnTypeDatabaseTypeName interface {
		ColumnTypeDatabaseTypeName(index int) string
	}
	rowsColumnTypeLength interface {
		ColumnTypeLength(index int) (length int64, ok bool)
	}
	rowsColumnTypeNullable interface {
		ColumnTypeNullable(index int) (nullable, ok bool)
	}
	rowsColumnTypePrecisionScale interface {
		ColumnTypePrecisionScale(index int) (precision, scale int64, ok bool)
	}
)

func (c *conn) wrapTx(t driver.Tx) driver.Tx {
	c.setTxStatus(txInTransaction)
	return &tx{inner: t, c: c}
}

func (c *conn) wrapStmt(s driver.Stmt, query string) driver.Stmt {
	return stmtWrappers[stmtMask(s)](&stmt{inner: s, c: c, query: query})
}

// wrapRows wraps r. Rows read on a context that can never be cancelled are
// watched for garbage collection: if database/sql's *sql.Rows is dropped
// without Close, the connection can never come back, and that is reported.
func (c *conn) wrapRows(ctx context.Context, r driver.Rows) driver.Rows {
	if t := reflect.TypeOf(r); t != c.rowsType {
		c.rowsType, c.rowsWrap = t, rowsWrappers[rowsMask(r)]
	}
	w, rw := c.rowsWrap(rows{inner: r, c: c})
	if ctx != nil && ctx.Done() == nil && c.pool.cfg.gcDetection {
		rw.watch = c.lendWatch() // see gcWatch
	}
	return w
}

// tx wraps a driver.Tx. Commit and Rollback do not return the connection;
// database/sql does that afterwards, through IsValid or Close.
type tx struct {
	inner driver.Tx
	c     *conn
}

func (t *tx) Commit() error {
	err := t.inner.Commit()
	t.c.afterTx(err)
	return err
}

func (t *tx) Rollback() error {
	err := t.inner.Rollback()
	t.c.afterTx(err)
	return err
}

// stmt wraps a driver.Stmt. Executing it may be the first sign of a
// checkout (a db-level *sql.Stmt re-executed on a handed-off connection).
type stmt struct {
	inner driver.Stmt
	c     *conn
	query string
}

// Close must not count as a use: database/sql closes statements on idle
// connections too.
func (s *stmt) Close() error  { return s.inner.Close() }
func (s *stmt) NumInput() int { return s.inner.NumInput() }

func (s *stmt) Exec(args []driver.Value) (driver.Result, error) {
	if err := s.c.use(nil, s.query); err != nil {
		return nil, err
	}
	r, err := s.inner.Exec(args) //nolint:staticcheck
	s.c.afterStatement()
	return r, err
}

func (s *stmt) Query(args []driver.Value) (driver.Rows, error) {
	if err := s.c.use(nil, s.query); err != nil {
		return nil, err
	}
	r, err := s.inner.Query(args) //nolint:staticcheck
	if err != nil {
		return nil, err
	}
	return s.c.wrapRows(nil, r), nil
}

type stmtExecContext stmt

func (s *stmtExecContext) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	if err := s.c.use(ctx, s.query); err != nil {
		return nil, err
	}
	r, err := s.inner.(driver.StmtExecContext).ExecContext(ctx, args)
	s.c.afterStatement()
	return r, err
}

type stmtQueryContext stmt

func (s *stmtQueryContext) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	if err := s.c.use(ctx, s.query); err != nil {
		return nil, err
	}
	r, err := s.inner.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	return s.c.wrapRows(ctx, r), nil
}

// rows wraps a driver.Rows; the wrappers in wrap_gen.go embed it by value,
// so wrapping costs one allocation.
type rows struct {
	inner driver.Rows
	c     *conn
	watch *gcWatch // held while the Rows is open, if watched (see gcWatch)
}

func (r *rows) Columns() []string              { return r.inner.Columns() }
func (r *rows) Next(dest []driver.Value) error { return r.inner.Next(dest) }

func (r *rows) Close() error {
	if w := r.watch; w != nil {
		r.watch = nil
		r.c.returnWatch(w)
	}
	err := r.inner.Close()
	r.c.afterStatement()
	return err
}
