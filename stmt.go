package pgxleak

import (
	"context"
	"database/sql/driver"
)

// newStmt wraps s, prepared on c for query. It is a function, not a method
// of conn, for the reason newTx is.
func newStmt(c *conn, s driver.Stmt, query string) driver.Stmt {
	return stmtWrappers[stmtMask(s)](&stmt{inner: s, c: c, query: query})
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
func (s *stmt) Close() error { return s.inner.Close() }

func (s *stmt) NumInput() int { return s.inner.NumInput() }

func (s *stmt) Exec(args []driver.Value) (driver.Result, error) {
	if err := s.c.use(noContext{}, s.query); err != nil {
		return nil, err
	}
	//lint:ignore SA1019 driver.Stmt requires Exec; called only for drivers without StmtExecContext
	r, err := s.inner.Exec(args)
	s.c.afterStatement()
	return r, err
}

func (s *stmt) Query(args []driver.Value) (driver.Rows, error) {
	if err := s.c.use(noContext{}, s.query); err != nil {
		return nil, err
	}
	//lint:ignore SA1019 driver.Stmt requires Query; called only for drivers without StmtQueryContext
	r, err := s.inner.Query(args)
	if err != nil {
		return nil, err
	}
	return s.c.wrapRows(noContext{}, r), nil
}

// ExecContext implements [driver.StmtExecContext]. Without it underneath,
// it falls back exactly as database/sql would (ctxDriverStmtExec).
func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	ec, ok := s.inner.(driver.StmtExecContext)
	if !ok {
		dargs, err := legacyArgs(ctx, args)
		if err != nil {
			return nil, err
		}
		if err := s.c.use(ctx, s.query); err != nil {
			return nil, err
		}
		//lint:ignore SA1019 the fallback database/sql itself makes
		r, err := s.inner.Exec(dargs)
		s.c.afterStatement()
		return r, err
	}
	if err := s.c.use(ctx, s.query); err != nil {
		return nil, err
	}
	r, err := ec.ExecContext(ctx, args)
	s.c.afterStatement()
	return r, err
}

// QueryContext implements [driver.StmtQueryContext]. Without it
// underneath, it falls back exactly as database/sql would
// (ctxDriverStmtQuery).
func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	var r driver.Rows
	var err error
	if qc, ok := s.inner.(driver.StmtQueryContext); ok {
		if err := s.c.use(ctx, s.query); err != nil {
			return nil, err
		}
		r, err = qc.QueryContext(ctx, args)
	} else {
		var dargs []driver.Value
		if dargs, err = legacyArgs(ctx, args); err != nil {
			return nil, err
		}
		if err := s.c.use(ctx, s.query); err != nil {
			return nil, err
		}
		//lint:ignore SA1019 the fallback database/sql itself makes
		r, err = s.inner.Query(dargs)
	}
	if err != nil {
		return nil, err
	}
	return s.c.wrapRows(ctx, r), nil
}

// CheckNamedValue implements [driver.NamedValueChecker]. database/sql
// asks a statement's checker first and the connection's only when the
// statement has none; the connection's answers driver.ErrSkip when the
// driver has none, so the route is database/sql's own.
func (s *stmt) CheckNamedValue(nv *driver.NamedValue) error {
	if nc, ok := s.inner.(driver.NamedValueChecker); ok {
		return nc.CheckNamedValue(nv)
	}
	return s.c.CheckNamedValue(nv)
}
