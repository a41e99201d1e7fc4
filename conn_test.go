package pgxleak_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/optional"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

func implements(v any, t reflect.Type) bool { return reflect.TypeOf(v).Implements(t) }

// TestOptionalInterfacesMatchPgx checks, interface by interface, the
// wrapped conn, stmt and rows against pgx's: an Exact interface as pgx
// has it, an Always one always (database/sql's fallback stands in when
// pgx lacks it), a Folded one never, but its context variant whenever pgx
// has it; and driver.Validator on the conn.
func TestOptionalInterfacesMatchPgx(t *testing.T) {
	db, _ := openTest(t)
	ctx := t.Context()
	c, err := db.Conn(ctx)
	require.NoError(t, err)
	defer c.Close()
	err = c.Raw(func(dc any) error {
		inner := dc.(interface{ Unwrap() driver.Conn }).Unwrap()
		require.IsType(t, &stdlib.Conn{}, inner, "Unwrap() gives pgx's conn")
		ws, err := dc.(driver.ConnPrepareContext).PrepareContext(ctx, "SELECT $1::int")
		if err != nil {
			return err
		}
		defer ws.Close()
		is, err := inner.(driver.ConnPrepareContext).PrepareContext(ctx, "SELECT $1::int")
		if err != nil {
			return err
		}
		defer is.Close()
		wr, err := dc.(driver.QueryerContext).QueryContext(ctx, "SELECT 1", nil)
		if err != nil {
			return err
		}
		wr.Close()
		ir, err := inner.(driver.QueryerContext).QueryContext(ctx, "SELECT 1", nil)
		if err != nil {
			return err
		}
		ir.Close()
		pairs := []struct {
			what           string
			wrapped, plain any
		}{{"conn", dc, inner}, {"stmt", ws, is}, {"rows", wr, ir}}
		for _, p := range pairs {
			for _, o := range optional.Of(p.what) {
				w, pl := implements(p.wrapped, o.Type), implements(p.plain, o.Type)
				switch o.Rule {
				case optional.Exact:
					assert.Equal(t, pl, w, "%s: the wrapper implements %s as pgx does", p.what, o.Name())
				case optional.Always:
					assert.True(t, w, "%s: wrapped does not implement %s", p.what, o.Name())
				case optional.Folded:
					assert.False(t, w, "%s: wrapped implements %s, folded into %s", p.what, o.Name(), o.Into.Name())
					if pl {
						assert.True(t, implements(p.wrapped, o.Into), "%s: pgx implements %s, wrapped not %s", p.what, o.Name(), o.Into.Name())
					}
				}
			}
		}
		assert.Implements(t, (*driver.Validator)(nil), dc, "the wrapped conn")
		return nil
	})
	require.NoError(t, err)
}

func TestPgErrorPassesThroughUnwrapped(t *testing.T) {
	db, _ := openTest(t)
	_, err := db.Exec("SELECT * FROM no_such_table")
	pgErr, ok := err.(*pgconn.PgError) // GORM does exactly this
	require.True(t, ok, "error is %T (%v), want *pgconn.PgError by plain type assertion", err, err)
	assert.Equal(t, "42P01", pgErr.Code, "undefined_table")
}

func TestPgxConnEscapeHatch(t *testing.T) {
	db, _ := openTest(t)
	c, err := db.Conn(t.Context())
	require.NoError(t, err)
	defer c.Close()
	err = c.Raw(func(dc any) error {
		pc, ok := pgxleak.PgxConn(dc)
		require.True(t, ok, "PgxConn(%T) failed", dc)
		var n int
		return pc.QueryRow(t.Context(), "SELECT 7").Scan(&n)
	})
	require.NoError(t, err)
	_, ok := pgxleak.PgxConn("not a conn")
	assert.False(t, ok, "PgxConn accepted a string")
}

// TestConnectionLeftInTransactionIsDiscarded: IsValid reports a connection
// whose transaction is still open as invalid, so database/sql closes it
// instead of handing it to the next caller mid-transaction.
func TestConnectionLeftInTransactionIsDiscarded(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(1))
	ctx := t.Context()
	c, err := db.Conn(ctx)
	require.NoError(t, err)
	var pid1 int
	require.NoError(t, c.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid1))
	_, err = c.ExecContext(ctx, "BEGIN") // a transaction database/sql doesn't know of
	require.NoError(t, err)
	c.Close()
	st := db.Stats()
	require.Zero(t, st.Idle, "a connection left inside a transaction went back to the pool")
	require.Zero(t, st.OpenConnections, "a connection left inside a transaction stayed open")
	var pid2 int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid2))
	assert.NotEqual(t, pid1, pid2, "the connection was reused although it was left inside a transaction")
}

// cancelArg cancels the statement's context while database/sql converts
// the arguments, that is after it checked the context and before the
// driver runs the statement.
type cancelArg struct{ cancel context.CancelFunc }

func (a cancelArg) Value() (driver.Value, error) {
	a.cancel()
	return int64(1), nil
}

// queryAll reads rows into a string, for comparing results.
func queryAll(rows *sql.Rows, err error) (string, error) {
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return "", err
		}
		out = append(out, v)
	}
	return strings.Join(out, ","), rows.Err()
}

// TestWrapFallbackParity runs each case over the same fake driver twice,
// through plain database/sql and through pgxleak, and requires the same
// result, the same error text and the same calls reaching the driver:
// where the wrapper stands in for an optional interface the driver lacks,
// it must do exactly what database/sql does without it.
func TestWrapFallbackParity(t *testing.T) {
	type run func(ctx context.Context, cancel context.CancelFunc, db *sql.DB) (string, error)
	exec := func(query string, args ...any) run {
		return func(ctx context.Context, _ context.CancelFunc, db *sql.DB) (string, error) {
			_, err := db.ExecContext(ctx, query, args...)
			return "", err
		}
	}
	cancelling := func(f func(ctx context.Context, db *sql.DB, arg any) (string, error)) run {
		return func(ctx context.Context, cancel context.CancelFunc, db *sql.DB) (string, error) {
			return f(ctx, db, cancelArg{cancel})
		}
	}
	stmtExec := func(query string, args ...any) run {
		return func(ctx context.Context, _ context.CancelFunc, db *sql.DB) (string, error) {
			st, err := db.PrepareContext(ctx, query)
			if err != nil {
				return "", err
			}
			defer st.Close()
			_, err = st.ExecContext(ctx, args...)
			return "", err
		}
	}
	const namedErr = "sql: driver does not support the use of Named Parameters"
	cases := []struct {
		name       string
		legacy     testdriver.Legacy
		cancelIn   string // "prepare": the context ends inside the driver's Prepare
		run        run
		wantErr    string // in both results; "" for none
		wantLog    string // in both logs
		sinceGo126 bool   // wantLog is database/sql's behaviour from Go 1.26 on
	}{
		{
			name: "Execer: named parameter", legacy: testdriver.Legacy{ExecQuery: true},
			run: exec("E", sql.Named("a", 1)), wantErr: namedErr,
		},
		{
			name: "Queryer: named parameter", legacy: testdriver.Legacy{ExecQuery: true},
			run: func(ctx context.Context, _ context.CancelFunc, db *sql.DB) (string, error) {
				return queryAll(db.QueryContext(ctx, "Q", sql.Named("a", 1)))
			},
			wantErr: namedErr,
		},
		{
			name: "Stmt Exec: named parameter", run: exec("E", sql.Named("a", 1)),
			wantErr: namedErr, wantLog: "close E",
		},
		{
			name: "Stmt Query: named parameter",
			run: func(ctx context.Context, _ context.CancelFunc, db *sql.DB) (string, error) {
				return queryAll(db.QueryContext(ctx, "Q", sql.Named("a", 1)))
			},
			wantErr: namedErr, wantLog: "close Q",
		},
		{
			name: "Execer: positional", legacy: testdriver.Legacy{ExecQuery: true},
			run: exec("E", 7), wantLog: "exec E [7]",
		},
		{
			name: "Queryer: positional", legacy: testdriver.Legacy{ExecQuery: true},
			run: func(ctx context.Context, _ context.CancelFunc, db *sql.DB) (string, error) {
				return queryAll(db.QueryContext(ctx, "Q", 7))
			},
			wantLog: "query Q [7]",
		},
		{
			name: "no Execer: prepared instead", run: exec("E", 7),
			wantLog: "stmt exec E [7]",
		},
		{
			name: "no ConnPrepareContext: context ends during Prepare", cancelIn: "prepare",
			run: func(ctx context.Context, _ context.CancelFunc, db *sql.DB) (string, error) {
				st, err := db.PrepareContext(ctx, "P")
				if err == nil {
					st.Close()
				}
				return "", err
			},
			wantErr: "context canceled", wantLog: "close P",
		},
		{
			name: "Execer: context ends before Exec", legacy: testdriver.Legacy{ExecQuery: true},
			run: cancelling(func(ctx context.Context, db *sql.DB, arg any) (string, error) {
				_, err := db.ExecContext(ctx, "E", arg)
				return "", err
			}),
			wantErr: "context canceled",
		},
		{
			name: "Queryer: context ends before Query", legacy: testdriver.Legacy{ExecQuery: true},
			run: cancelling(func(ctx context.Context, db *sql.DB, arg any) (string, error) {
				return queryAll(db.QueryContext(ctx, "Q", arg))
			}),
			wantErr: "context canceled",
		},
		{
			name: "no StmtExecContext: context ends before Exec",
			run: cancelling(func(ctx context.Context, db *sql.DB, arg any) (string, error) {
				_, err := db.ExecContext(ctx, "E", arg)
				return "", err
			}),
			wantErr: "context canceled", wantLog: "close E",
		},
		{
			name: "no StmtQueryContext: context ends before Query",
			run: cancelling(func(ctx context.Context, db *sql.DB, arg any) (string, error) {
				return queryAll(db.QueryContext(ctx, "Q", arg))
			}),
			wantErr: "context canceled", wantLog: "close Q",
		},
		{
			name: "no NamedValueChecker: ErrSkip to the ColumnConverter", legacy: testdriver.Legacy{ColumnConverter: true},
			run: exec("E", testdriver.CCArg{N: 1}), wantLog: "stmt exec E [cc1]", sinceGo126: true,
		},
		{
			name: "no NamedValueChecker: ErrSkip to the default conversion",
			run:  exec("E", testdriver.CCArg{N: 1}), wantErr: "unsupported type testdriver.CCArg",
		},
		{
			name: "conn NamedValueChecker serves a statement without one", legacy: testdriver.Legacy{NamedValueChecker: true},
			run: stmtExec("E", testdriver.NVCArg{N: 2}), wantLog: "stmt exec E [nvc2]",
		},
		{
			name: "conn NamedValueChecker skips to the ColumnConverter", legacy: testdriver.Legacy{NamedValueChecker: true, ColumnConverter: true},
			run: stmtExec("E", testdriver.CCArg{N: 3}, testdriver.NVCArg{N: 4}), wantLog: "stmt exec E [cc3 nvc4]", sinceGo126: true,
		},
		{
			name: "no Pinger: Ping is nil",
			run: func(ctx context.Context, _ context.CancelFunc, db *sql.DB) (string, error) {
				return "", db.PingContext(ctx)
			},
		},
		{
			name: "no ConnBeginTx: isolation level refused",
			run: func(ctx context.Context, _ context.CancelFunc, db *sql.DB) (string, error) {
				tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable})
				if err == nil {
					tx.Rollback()
				}
				return "", err
			},
			wantErr: "sql: driver does not support non-default isolation level",
		},
	}
	type result struct {
		Value, Err string
		Log        []string
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			do := func(open func(driver.Connector) (*sql.DB, error)) result {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				legacy := tc.legacy
				if tc.cancelIn == "prepare" {
					legacy.OnPrepare = cancel
				}
				fake := &testdriver.Connector{Legacy: &legacy}
				db, err := open(fake)
				require.NoError(t, err)
				v, err := tc.run(ctx, cancel, db)
				require.NoError(t, db.Close())
				r := result{Value: v}
				if err != nil {
					r.Err = err.Error()
				}
				r.Log = fake.Calls()
				return r
			}
			plain := do(func(c driver.Connector) (*sql.DB, error) { return sql.OpenDB(c), nil })
			wrapped := do(func(c driver.Connector) (*sql.DB, error) { return pgxleak.OpenDB(c) })
			assert.Equal(t, plain, wrapped, "plain database/sql (expected) and pgxleak (actual)")
			if tc.wantErr == "" {
				assert.Empty(t, plain.Err, "error")
			} else {
				assert.Contains(t, plain.Err, tc.wantErr, "error")
			}
			// Go 1.25's database/sql does not go on to the statement's
			// ColumnConverter after ErrSkip; parity (above) holds on both.
			if tc.sinceGo126 && strings.HasPrefix(runtime.Version(), "go1.25") {
				return
			}
			if tc.wantLog != "" {
				assert.Contains(t, strings.Join(plain.Log, "\n"), tc.wantLog, "the driver calls")
			}
		})
	}
}
