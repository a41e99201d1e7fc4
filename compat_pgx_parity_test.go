package pgxleak_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // the plain "pgx" driver, for parity
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// parityCall is one call made the same way through both drivers. It
// returns a comparable rendering of what it got.
type parityCall struct {
	name string
	call func(ctx context.Context, db *sql.DB) (any, error)
}

func parityCalls() []parityCall {
	queryAll := func(ctx context.Context, db *sql.DB, q string, args ...any) (any, error) {
		rows, err := db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		cts, err := rows.ColumnTypes()
		if err != nil {
			return nil, err
		}
		var out []string
		for _, ct := range cts {
			l, lok := ct.Length()
			p, s, dok := ct.DecimalSize()
			nl, nok := ct.Nullable()
			out = append(out, fmt.Sprintf("col %s %s len=%d/%v dec=%d,%d/%v null=%v/%v scan=%v",
				ct.Name(), ct.DatabaseTypeName(), l, lok, p, s, dok, nl, nok, ct.ScanType()))
		}
		for rows.Next() {
			vals := make([]any, len(cts))
			ptrs := make([]any, len(cts))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				return out, err
			}
			out = append(out, fmt.Sprintf("%#v", vals))
		}
		out = append(out, fmt.Sprintf("next result set: %v", rows.NextResultSet()))
		return out, rows.Err()
	}
	exec := func(ctx context.Context, db *sql.DB, q string, args ...any) (any, error) {
		r, err := db.ExecContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		n, err1 := r.RowsAffected()
		id, err2 := r.LastInsertId()
		return fmt.Sprintf("affected %d (%v), last insert id %d (%v)", n, err1, id, err2), nil
	}
	return []parityCall{
		{"select rows with column types", func(ctx context.Context, db *sql.DB) (any, error) {
			return queryAll(ctx, db, `SELECT id, name, price, tags, created, note FROM items ORDER BY id`)
		}},
		{"select with args", func(ctx context.Context, db *sql.DB) (any, error) {
			return queryAll(ctx, db, `SELECT id, name FROM items WHERE price > $1 AND name LIKE $2 ORDER BY id`, 1.5, "i%")
		}},
		{"select literals of many types", func(ctx context.Context, db *sql.DB) (any, error) {
			return queryAll(ctx, db, `SELECT 1::int2, 2::int4, 3::int8, 1.5::float4, 2.5::float8, 'x'::varchar(10), 'y'::char(3), true,
				'2020-01-02'::date, '10:11:12'::time, '\xdead'::bytea, 1.25::numeric(5,2), '{"a":1}'::json, '[1]'::jsonb,
				'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, '1 day'::interval, '{1,2}'::int[], NULL::text, 42::oid, '127.0.0.1'::inet`)
		}},
		{"exec insert", func(ctx context.Context, db *sql.DB) (any, error) {
			return exec(ctx, db, `INSERT INTO items (id, name, price) VALUES ($1, $2, $3)`, 100, "new", "9.99")
		}},
		{"exec update many", func(ctx context.Context, db *sql.DB) (any, error) {
			return exec(ctx, db, `UPDATE items SET note = 'seen' WHERE id < $1`, 3)
		}},
		{"exec DDL", func(ctx context.Context, db *sql.DB) (any, error) {
			return exec(ctx, db, `CREATE TEMP TABLE scratch (x int)`)
		}},
		{"exec two statements, no args", func(ctx context.Context, db *sql.DB) (any, error) {
			return exec(ctx, db, `UPDATE items SET note = 'a' WHERE id = 1; UPDATE items SET note = 'b' WHERE id = 2`)
		}},
		{"no rows", func(ctx context.Context, db *sql.DB) (any, error) {
			var s string
			err := db.QueryRowContext(ctx, `SELECT name FROM items WHERE id = -1`).Scan(&s)
			return s, err
		}},
		{"syntax error", func(ctx context.Context, db *sql.DB) (any, error) {
			return exec(ctx, db, `SELEC 1`)
		}},
		{"unique violation", func(ctx context.Context, db *sql.DB) (any, error) {
			return exec(ctx, db, `INSERT INTO items (id, name) VALUES ($1, $2)`, 1, "dup")
		}},
		{"check violation", func(ctx context.Context, db *sql.DB) (any, error) {
			return exec(ctx, db, `INSERT INTO items (id, name, price) VALUES (50, 'neg', -1)`)
		}},
		{"division by zero in a row", func(ctx context.Context, db *sql.DB) (any, error) {
			return queryAll(ctx, db, `SELECT 1 / (id - 2) FROM items ORDER BY id`)
		}},
		{"undefined column", func(ctx context.Context, db *sql.DB) (any, error) {
			return queryAll(ctx, db, `SELECT nope FROM items`)
		}},
		{"too few arguments", func(ctx context.Context, db *sql.DB) (any, error) {
			return queryAll(ctx, db, `SELECT $1::int, $2::int`, 1)
		}},
		{"argument of the wrong type", func(ctx context.Context, db *sql.DB) (any, error) {
			return queryAll(ctx, db, `SELECT $1::int`, "not a number")
		}},
		{"unsupported argument type", func(ctx context.Context, db *sql.DB) (any, error) {
			return queryAll(ctx, db, `SELECT $1::int`, struct{ X int }{1})
		}},
		{"scan text into int", func(ctx context.Context, db *sql.DB) (any, error) {
			var n int
			err := db.QueryRowContext(ctx, `SELECT 'abc'`).Scan(&n)
			return n, err
		}},
		{"scan NULL into string", func(ctx context.Context, db *sql.DB) (any, error) {
			var s string
			err := db.QueryRowContext(ctx, `SELECT NULL::text`).Scan(&s)
			return s, err
		}},
		{"scan too few destinations", func(ctx context.Context, db *sql.DB) (any, error) {
			var a int
			err := db.QueryRowContext(ctx, `SELECT 1, 2`).Scan(&a)
			return a, err
		}},
		{"pgx.NamedArgs", func(ctx context.Context, db *sql.DB) (any, error) {
			return queryAll(ctx, db, `SELECT @a::int + @b::int AS sum, @name::text AS name`, pgx.NamedArgs{"a": 1, "b": 2, "name": "named"})
		}},
		{"pgx.StrictNamedArgs missing", func(ctx context.Context, db *sql.DB) (any, error) {
			return queryAll(ctx, db, `SELECT @a::int + @b::int`, pgx.StrictNamedArgs{"a": 1})
		}},
		{"sql.Named", func(ctx context.Context, db *sql.DB) (any, error) {
			return queryAll(ctx, db, `SELECT $1::int + $2::int`, sql.Named("a", 1), sql.Named("b", 2))
		}},
		{"QueryExecMode per query", func(ctx context.Context, db *sql.DB) (any, error) {
			return queryAll(ctx, db, `SELECT $1::text`, pgx.QueryExecModeSimpleProtocol, "simple")
		}},
		{"transaction commit then commit again", func(ctx context.Context, db *sql.DB) (any, error) {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return nil, err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE items SET note = 'tx' WHERE id = 3`); err != nil {
				_ = tx.Rollback()
				return nil, err
			}
			if err := tx.Commit(); err != nil {
				return nil, err
			}
			return queryAll(ctx, db, `SELECT note FROM items WHERE id = 3`)
		}},
		{"commit twice", func(ctx context.Context, db *sql.DB) (any, error) {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return nil, err
			}
			if err := tx.Commit(); err != nil {
				return nil, err
			}
			return nil, tx.Commit()
		}},
		{"rollback undoes", func(ctx context.Context, db *sql.DB) (any, error) {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return nil, err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM items`); err != nil {
				_ = tx.Rollback()
				return nil, err
			}
			if err := tx.Rollback(); err != nil {
				return nil, err
			}
			return queryAll(ctx, db, `SELECT count(*) FROM items`)
		}},
		{"error inside transaction aborts it", func(ctx context.Context, db *sql.DB) (any, error) {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return nil, err
			}
			defer tx.Rollback()
			_, err1 := tx.ExecContext(ctx, `SELECT 1/0`)
			_, err2 := tx.ExecContext(ctx, `SELECT 1`)
			err3 := tx.Commit()
			return fmt.Sprintf("%v | %v | %v", err1, err2, err3), nil
		}},
		{"read-only serializable transaction", func(ctx context.Context, db *sql.DB) (any, error) {
			tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable, ReadOnly: true})
			if err != nil {
				return nil, err
			}
			defer tx.Rollback()
			var iso string
			if err := tx.QueryRowContext(ctx, `SHOW transaction_isolation`).Scan(&iso); err != nil {
				return nil, err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO items (id, name) VALUES (200, 'ro')`)
			return iso, err
		}},
		{"unsupported isolation level", func(ctx context.Context, db *sql.DB) (any, error) {
			tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelLinearizable})
			if err == nil {
				_ = tx.Rollback()
			}
			return nil, err
		}},
		{"context already cancelled", func(ctx context.Context, db *sql.DB) (any, error) {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			return queryAll(cctx, db, `SELECT 1`)
		}},
		{"ping", func(ctx context.Context, db *sql.DB) (any, error) {
			return "pong", db.PingContext(ctx)
		}},
	}
}

// TestPgxParity runs the same table of calls through sql.Open("pgx") and
// pgxleak.Open on two identical databases, and compares what comes back:
// values, column metadata, error text and error types (so driver errors
// pass through unwrapped).
func TestPgxParity(t *testing.T) {
	t.Parallel()
	const schema = `CREATE TABLE items (id int PRIMARY KEY, name text UNIQUE NOT NULL, price numeric(10,2) CHECK (price >= 0),
		tags text[], created timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00', note varchar(20));
		INSERT INTO items (id, name, price, tags) VALUES (1, 'item one', 1.50, '{a,b}'), (2, 'item two', 2.25, NULL), (3, 'three', NULL, '{}')`
	ctx := t.Context()
	plainDSN := pgtest.NewDatabase(t)
	plain, err := sql.Open("pgx", plainDSN)
	require.NoError(t, err)
	defer plain.Close()
	plain.SetMaxOpenConns(1) // temp tables and session state land where they would with pgxleak's
	leak, _ := openTest(t, pgxleak.WithMaxOpenConns(1))
	for _, db := range []*sql.DB{plain, leak} {
		_, err := db.ExecContext(ctx, schema)
		require.NoError(t, err)
	}
	for _, pc := range parityCalls() {
		t.Run(pc.name, func(t *testing.T) {
			want, wantErr := pc.call(ctx, plain)
			got, gotErr := pc.call(ctx, leak)
			assert.Equal(t, want, got, "pgx's result (expected) and pgxleak's (actual)")
			assert.Equal(t, describeErr(wantErr), describeErr(gotErr), "pgx's error (expected) and pgxleak's (actual)")
			for _, sentinel := range []error{sql.ErrNoRows, sql.ErrTxDone, context.Canceled} {
				assert.Equal(t, errors.Is(wantErr, sentinel), errors.Is(gotErr, sentinel), "errors.Is(err, %v): pgx (expected) and pgxleak (actual)", sentinel)
			}
			assert.IsType(t, wantErr, gotErr, "driver errors must pass through unwrapped (GORM type-asserts *pgconn.PgError)")
			if testing.Verbose() {
				t.Logf("result %v, error %s", got, describeErr(gotErr))
			}
		})
	}
	pgxleak.VerifyNone(t, leak)
}

// describeErr renders an error with the type of every error in its chain.
func describeErr(err error) string {
	if err == nil {
		return "<nil>"
	}
	var types []string
	for e := err; e != nil; e = errors.Unwrap(e) {
		types = append(types, fmt.Sprintf("%T", e))
	}
	var pgErr *pgconn.PgError
	code := ""
	if errors.As(err, &pgErr) {
		code = fmt.Sprintf(" [SQLSTATE %s, constraint %q, detail %q, position %d]", pgErr.Code, pgErr.ConstraintName, pgErr.Detail, pgErr.Position)
	}
	return fmt.Sprintf("%s (%s)%s", err.Error(), strings.Join(types, " > "), code)
}
