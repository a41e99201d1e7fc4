package pgxleak

import (
	"context"
	"database/sql/driver"
	"errors"
	"reflect"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

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
// method around a pgx connection, and a bare *stdlib.Conn. On pgxleak's
// wrapper it counts as an operation: a checkout nothing else showed
// (database/sql's background opener makes no driver call when it hands a
// connection over) is recorded here, at this line of the Raw function.
func PgxConn(dc any) (*pgx.Conn, bool) {
	if w, ok := dc.(interface{ tracked() *conn }); ok {
		_ = w.tracked().use(noContext{}, "") // while draining, the caller has it anyway
	}
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
// database/sql is conn.wrapper, which embeds *conn. The optional interfaces
// are listed once, in internal/optional, each with its rule:
//
//   - Exact, where database/sql behaves differently on the type assertion
//     alone: the wrapper implements ExecerContext, QueryerContext,
//     ConnBeginTx and SessionResetter if and only if the wrapped
//     connection does (the legacy Execer and Queryer count as their
//     context variants). Each combination is a generated type (wrap_gen.go).
//   - Always, where database/sql documents what absence means: Pinger,
//     ConnPrepareContext and NamedValueChecker are methods of conn, which
//     do what database/sql would do without them.
//   - Validator is the one exception: always present, since IsValid is
//     where a return is recorded. It changes one thing: with
//     SessionResetter, database/sql keeps the connection when a
//     transaction's context ends (sql.go, beginDC, Go 1.26 lines 1903-1905:
//     keepConnOnRollback = hasSessionResetter && hasConnectionValidator),
//     where a bare pgx connection would be closed.
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

// newConn wraps a freshly connected driver connection and registers its
// state with the tracker.
func newConn(t *pool, inner driver.Conn) *conn {
	c := &conn{connState: connState{pool: t, txStatus: txIdle}, inner: inner}
	_, resets := inner.(driver.SessionResetter)
	c.noReset = !resets
	if sc, ok := inner.(*stdlib.Conn); ok {
		c.pgx = sc.Conn()
		c.pid = c.pgx.PgConn().PID()
	}
	c.wrapper = connWrappers[connMask(inner)](c)
	t.register(&c.connState)
	return c
}

// tracked is how PgxConn recognises pgxleak's wrapper.
func (c *conn) tracked() *conn { return c }

// Unwrap returns the wrapped driver connection, for code that used
// (*sql.Conn).Raw with a driver-specific type assertion.
func (c *conn) Unwrap() driver.Conn { return c.inner }

// Prepare implements [driver.Conn].
func (c *conn) Prepare(query string) (driver.Stmt, error) {
	if err := c.use(noContext{}, query); err != nil {
		return nil, err
	}
	s, err := c.inner.Prepare(query)
	if err != nil {
		return nil, err
	}
	return newStmt(c, s, query), nil
}

// Close implements [driver.Conn]. It is one of the two ways a connection
// comes back: database/sql closes bad, expired and surplus connections.
func (c *conn) Close() error {
	c.pool.closeConn(&c.connState)
	return c.inner.Close()
}

// Begin implements [driver.Conn].
func (c *conn) Begin() (driver.Tx, error) {
	if err := c.use(noContext{}, "BEGIN"); err != nil {
		return nil, err
	}
	//lint:ignore SA1019 driver.Conn requires Begin; database/sql calls it for drivers without ConnBeginTx
	t, err := c.inner.Begin()
	if err != nil {
		return nil, err
	}
	return newTx(c, t), nil
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

// Ping implements [driver.Pinger]. Without a Pinger underneath it does
// what (*sql.DB).PingContext does for such a driver: nothing, and nil.
// It does not count as a use then, as nothing reaches the connection.
func (c *conn) Ping(ctx context.Context) error {
	p, ok := c.inner.(driver.Pinger)
	if !ok {
		return nil
	}
	if err := c.use(ctx, ""); err != nil {
		return err
	}
	return p.Ping(ctx)
}

// PrepareContext implements [driver.ConnPrepareContext]. Without it
// underneath, it falls back exactly as database/sql would
// (ctxDriverPrepare): Prepare, then close the statement and return
// ctx.Err() if ctx ended meanwhile.
func (c *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if err := c.use(ctx, query); err != nil {
		return nil, err
	}
	var s driver.Stmt
	var err error
	if pc, ok := c.inner.(driver.ConnPrepareContext); ok {
		s, err = pc.PrepareContext(ctx, query)
	} else {
		s, err = c.inner.Prepare(query)
		if err == nil {
			select {
			default:
			case <-ctx.Done():
				s.Close()
				return nil, ctx.Err()
			}
		}
	}
	if err != nil {
		return nil, err
	}
	return newStmt(c, s, query), nil
}

// CheckNamedValue implements [driver.NamedValueChecker]. Without one
// underneath it returns [driver.ErrSkip], which database/sql documents as
// "continue as if unimplemented": the column converter, then the default
// conversion.
func (c *conn) CheckNamedValue(nv *driver.NamedValue) error {
	if nc, ok := c.inner.(driver.NamedValueChecker); ok {
		return nc.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

// connExecerContext is in the wrapper when the wrapped connection has
// ExecerContext or the older Execer: database/sql prepares a statement
// when it has neither, so that presence is mirrored exactly.
type connExecerContext conn

func (c *connExecerContext) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	ec, ok := c.inner.(driver.ExecerContext)
	if !ok {
		// database/sql's own fallback onto Execer (ctxDriverExec).
		dargs, err := legacyArgs(ctx, args)
		if err != nil {
			return nil, err
		}
		if err := c.use(ctx, query); err != nil {
			return nil, err
		}
		//lint:ignore SA1019 the fallback database/sql itself makes
		r, err := c.inner.(driver.Execer).Exec(query, dargs)
		(*conn)(c).afterStatement()
		return r, err
	}
	if err := c.use(ctx, query); err != nil {
		return nil, err
	}
	r, err := ec.ExecContext(ctx, query, args)
	(*conn)(c).afterStatement()
	return r, err
}

// connQueryerContext is in the wrapper when the wrapped connection has
// QueryerContext or the older Queryer, as connExecerContext.
type connQueryerContext conn

func (c *connQueryerContext) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	var r driver.Rows
	var err error
	if qc, ok := c.inner.(driver.QueryerContext); ok {
		if err := c.use(ctx, query); err != nil {
			return nil, err
		}
		r, err = qc.QueryContext(ctx, query, args)
	} else {
		// database/sql's own fallback onto Queryer (ctxDriverQuery).
		var dargs []driver.Value
		if dargs, err = legacyArgs(ctx, args); err != nil {
			return nil, err
		}
		if err := c.use(ctx, query); err != nil {
			return nil, err
		}
		//lint:ignore SA1019 the fallback database/sql itself makes
		r, err = c.inner.(driver.Queryer).Query(query, dargs)
	}
	if err != nil {
		return nil, err
	}
	return (*conn)(c).wrapRows(ctx, r), nil
}

// legacyArgs is what database/sql does before calling a driver without
// the context methods (ctxDriverExec, ctxDriverQuery and their Stmt
// twins): namedValueToValue's conversion, error text included, then the
// context check.
func legacyArgs(ctx context.Context, named []driver.NamedValue) ([]driver.Value, error) {
	dargs := make([]driver.Value, len(named))
	for n, param := range named {
		if len(param.Name) > 0 {
			return nil, errors.New("sql: driver does not support the use of Named Parameters")
		}
		dargs[n] = param.Value
	}
	select {
	default:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return dargs, nil
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
	return newTx((*conn)(c), t), nil
}

type connSessionResetter conn

// ResetSession is where database/sql checks out an idle connection that has
// been used before. An expired connection, or any while the pool drains, is
// answered with ErrBadConn, which makes database/sql discard it and retry.
func (c *connSessionResetter) ResetSession(ctx context.Context) error {
	p := c.pool
	now, _ := p.clockNow() // for the expiry check and the checkout
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
	// (Connect counts itself in p.tracker.handingOut instead, because Drain cannot
	// see a connection before it exists; here that would cost every
	// checkout two atomic writes to a cache line all checkouts share.)
	c.mu.Lock()
	// A connection whose backend was terminated is discarded at its
	// return; should one ever be idle, it is discarded here, not handed
	// out to fail at its first statement.
	if p.tracker.draining.Load() || c.terminated {
		c.mu.Unlock()
		return driver.ErrBadConn
	}
	if c.state == stateIdle {
		c.checkoutAtLocked(ctx, now)
	}
	c.mu.Unlock()
	c.pool.tel.handoff(ctx) // a waiter handed this connection: attribute its wait (see telemetry.handoff)
	// database/sql hands the connection out despite any other error.
	return err
}
