package pgxleak_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
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

// scanCase is one query whose single row is scanned into fresh
// destinations through each driver. Go 1.27's database/sql hands the
// scanning to pgx (driver.RowsColumnScanner), which scans slices,
// pgtype.Array, Range and more straight into the destination; before Go
// 1.27 database/sql converts pgx's driver.Values itself. Either way, both
// drivers must give the same values or the same error.
type scanCase struct {
	name  string
	query string
	args  []any
	dests func() []any // fresh destinations, one per column
	// rows scans with Query, Next and Scan instead of QueryRow: for
	// sql.RawBytes, which Row.Scan refuses, and for a nil sql.Scanner,
	// which database/sql before Go 1.27 calls, panicking while it holds
	// the Rows' close lock (so that Row.Scan's deferred Close would wait
	// forever).
	rows bool
}

// into returns fresh destinations: one new(T) for each type given.
func into[T any]() func() []any { return func() []any { return []any{new(T)} } }

// dests returns the same destinations every time: for nil ones.
func dests(d ...any) func() []any { return func() []any { return d } }

// newerScanCases are cases that need a newer Go than 1.25 to compile
// (compat_pgx_parity_go127_test.go).
var newerScanCases []scanCase

// failingScanner is a sql.Scanner that rejects every value, and counts
// its calls.
type failingScanner struct{ calls int }

func (s *failingScanner) Scan(any) error {
	s.calls++
	return errors.New("value rejected by the scanner")
}

// srcRecorder is a sql.Scanner that records the driver.Value it is given:
// its Go type and value.
type srcRecorder struct{ src string }

func (s *srcRecorder) Scan(src any) error {
	s.src = fmt.Sprintf("%T %v", src, src)
	return nil
}

type namedString string

func scanCases() []scanCase {
	cases := []scanCase{
		// Slices.
		{name: "[]int32 from int4[]", query: "SELECT array[1,2,3]::int4[]", dests: into[[]int32]()},
		{name: "[]int32 from NULL int4[]", query: "SELECT NULL::int4[]", dests: into[[]int32]()},
		{name: "[]int32 from an empty int4[]", query: "SELECT '{}'::int4[]", dests: into[[]int32]()},
		{name: "[]string from text[]", query: "SELECT array['John', 'Jane']::text[]", dests: into[[]string]()},
		{name: "[]string from a text[] argument", query: "SELECT $1::text[]", args: []any{[]string{"a", "b c"}}, dests: into[[]string]()},
		{name: "[]*int32 with NULL elements", query: "SELECT array[1,NULL,3]::int4[]", dests: into[[]*int32]()},
		{name: "[]int32 with NULL elements", query: "SELECT array[1,NULL,3]::int4[]", dests: into[[]int32]()},
		{name: "[][]int32 from a 2-D int4[]", query: "SELECT '{{1,2},{3,4}}'::int4[]", dests: into[[][]int32]()},
		{name: "[]int32 from a 2-D int4[]", query: "SELECT '{{1,2},{3,4}}'::int4[]", dests: into[[]int32]()},
		{name: "[]float64 from float8[]", query: "SELECT array[1.5, 2.25]::float8[]", dests: into[[]float64]()},
		{name: "[]int64 from an int8[] argument", query: "SELECT $1::int8[]", args: []any{[]int64{1, -2}}, dests: into[[]int64]()},
		{name: "[]time.Time from date[]", query: "SELECT array['2024-01-02', '2024-02-29']::date[]", dests: into[[]time.Time]()},
		{name: "[]string from int4[]", query: "SELECT array[1,2]::int4[]", dests: into[[]string]()},
		{name: "[]int32 from text", query: "SELECT 'abc'::text", dests: into[[]int32]()},
		// Arrays of driver.Valuer (and sql.Scanner) elements.
		{name: "[]sql.NullString from text[] with NULL", query: "SELECT array['John', NULL, 'Jane']::text[]", dests: into[[]sql.NullString]()},
		{name: "[]sql.NullString from NULL text[]", query: "SELECT NULL::text[]", dests: into[[]sql.NullString]()},
		{name: "[]sql.NullString as an argument", query: "SELECT cardinality($1::text[])",
			args: []any{[]sql.NullString{{String: "a", Valid: true}, {}}}, dests: into[int]()},
		{name: "[]sql.NullInt64 from int8[]", query: "SELECT array[1,NULL]::int8[]", dests: into[[]sql.NullInt64]()},
		{name: "[]pgtype.Int4 from int4[]", query: "SELECT array[1,NULL]::int4[]", dests: into[[]pgtype.Int4]()},
		{name: "[]pgtype.Text from text[]", query: "SELECT array['x',NULL]::text[]", dests: into[[]pgtype.Text]()},
		// pgtype's generic containers.
		{name: "pgtype.Array[int64] from a 2-D bigint[]", query: "SELECT '{{1,2,3},{4,5,6}}'::bigint[]", dests: into[pgtype.Array[int64]]()},
		{name: "pgtype.Array[int64] from NULL", query: "SELECT NULL::bigint[]", dests: into[pgtype.Array[int64]]()},
		{name: "pgtype.Array[int64] as an argument", query: "SELECT '{{1,2},{3,4}}'::bigint[] = $1::bigint[]",
			args:  []any{pgtype.Array[int64]{Elements: []int64{1, 2, 3, 4}, Dims: []pgtype.ArrayDimension{{Length: 2, LowerBound: 1}, {Length: 2, LowerBound: 1}}, Valid: true}},
			dests: into[bool]()},
		{name: "pgtype.FlatArray[string] from text[]", query: "SELECT array['John', 'Jane']::text[]", dests: into[pgtype.FlatArray[string]]()},
		{name: "pgtype.FlatArray[string] from NULL", query: "SELECT NULL::text[]", dests: into[pgtype.FlatArray[string]]()},
		{name: "pgtype.FlatArray[byte] from int2[]", query: "SELECT array[1,2,3]::int2[]", dests: into[pgtype.FlatArray[byte]]()},
		{name: "pgtype.Range[pgtype.Int4]", query: "SELECT int4range(1, 5)", dests: into[pgtype.Range[pgtype.Int4]]()},
		{name: "pgtype.Range[pgtype.Int4] from NULL", query: "SELECT NULL::int4range", dests: into[pgtype.Range[pgtype.Int4]]()},
		{name: "pgtype.Range[pgtype.Date] unbounded", query: "SELECT daterange('2024-01-01', NULL)", dests: into[pgtype.Range[pgtype.Date]]()},
		{name: "pgtype.Range as an argument", query: "SELECT int4range(1, 5) = $1::int4range",
			args: []any{pgtype.Range[pgtype.Int4]{Lower: pgtype.Int4{Int32: 1, Valid: true}, Upper: pgtype.Int4{Int32: 5, Valid: true},
				LowerType: pgtype.Inclusive, UpperType: pgtype.Exclusive, Valid: true}},
			dests: into[bool]()},
		{name: "pgtype.Multirange", query: "SELECT int4multirange(int4range(1, 5), int4range(7, 9))", dests: into[pgtype.Multirange[pgtype.Range[pgtype.Int4]]]()},
		{name: "pgtype.Multirange from NULL", query: "SELECT NULL::int4multirange", dests: into[pgtype.Multirange[pgtype.Range[pgtype.Int4]]]()},
		{name: "pgtype.PreallocBytes from bytea", query: "SELECT decode('6162', 'hex')", dests: into[pgtype.PreallocBytes]()},
		// sql.Scanner destinations.
		{name: "sql.NullString from text", query: "SELECT 'x'::text", dests: into[sql.NullString]()},
		{name: "sql.NullString from NULL", query: "SELECT NULL::text", dests: into[sql.NullString]()},
		{name: "sql.NullInt64 from int8", query: "SELECT 42::int8", dests: into[sql.NullInt64]()},
		{name: "sql.NullInt64 from text that is no number", query: "SELECT 'abc'::text", dests: into[sql.NullInt64]()},
		{name: "sql.Null[int32] from int4", query: "SELECT 7::int4", dests: into[sql.Null[int32]]()},
		{name: "sql.NullTime from timestamptz", query: "SELECT '2024-02-29 13:14:15+00'::timestamptz", dests: into[sql.NullTime]()},
		{name: "pgtype.Int4 from int4", query: "SELECT 42::int4", dests: into[pgtype.Int4]()},
		{name: "pgtype.Numeric from numeric", query: "SELECT 1.25::numeric", dests: into[pgtype.Numeric]()},
		{name: "a failing sql.Scanner", query: "SELECT 42::int4", dests: into[failingScanner]()},
		{name: "a failing sql.Scanner on NULL", query: "SELECT NULL::int4", dests: into[failingScanner]()},
		{name: "the driver.Value a sql.Scanner is given, per type",
			query: `SELECT 42::int2, 42::int4, 42::int8, 1.5::float4, 1.25::numeric, true, 'x'::text, '\xab'::bytea, '2024-01-02'::date,
				'2024-02-29 13:14:15+00'::timestamptz, '10:11:12'::time, '{"a":1}'::jsonb, '[1]'::json, array[1,2]::int4[],
				'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, '1 day'::interval, '127.0.0.1'::inet, int4range(1, 5), NULL::int4`,
			dests: func() []any {
				d := make([]any, 19)
				for i := range d {
					d[i] = new(srcRecorder)
				}
				return d
			}},
		{name: "json.RawMessage from jsonb", query: `SELECT '{"a": [1, 2]}'::jsonb`, dests: into[json.RawMessage]()},
		// Scalar conversions.
		{name: "bool to string", query: "SELECT true", dests: into[string]()},
		{name: "false to []byte", query: "SELECT false", dests: into[[]byte]()},
		{name: "date to string", query: "SELECT '2026-09-07'::date", dests: into[string]()},
		{name: "bytea to string", query: "SELECT decode('6162', 'hex')", dests: into[string]()},
		{name: "bytea to a named string", query: "SELECT decode('6162', 'hex')", dests: into[namedString]()},
		{name: "int4 to string", query: "SELECT 42::int4", dests: into[string]()},
		{name: "int4 to *int64", query: "SELECT 42::int4", dests: into[*int64]()},
		{name: "int4 to uint8", query: "SELECT 42::int4", dests: into[uint8]()},
		{name: "negative int4 to uint", query: "SELECT -1::int4", dests: into[uint]()},
		{name: "int8 overflowing int8", query: "SELECT 300::int8", dests: into[int8]()},
		{name: "numeric to float64", query: "SELECT 1.25::numeric", dests: into[float64]()},
		{name: "numeric to string", query: "SELECT 1.25::numeric", dests: into[string]()},
		{name: "numeric to int", query: "SELECT 1.25::numeric", dests: into[int]()},
		{name: "float8 to int", query: "SELECT 1.5::float8", dests: into[int]()},
		{name: "float4 to float32", query: "SELECT 1.5::float4", dests: into[float32]()},
		{name: "text number to int", query: "SELECT '12'::text", dests: into[int]()},
		{name: "text to int", query: "SELECT 'abc'::text", dests: into[int]()},
		{name: "text to bool", query: "SELECT 't'::text", dests: into[bool]()},
		{name: "NULL to string", query: "SELECT NULL::text", dests: into[string]()},
		{name: "NULL to *string", query: "SELECT NULL::text", dests: into[*string]()},
		{name: "NULL to []byte", query: "SELECT NULL::bytea", dests: into[[]byte]()},
		{name: "NULL jsonb to string", query: "SELECT NULL::jsonb", dests: into[string]()},
		{name: "timestamptz to time.Time", query: "SELECT '2024-02-29 13:14:15.123456+05'::timestamptz", dests: into[time.Time]()},
		{name: "timestamptz to string", query: "SELECT '2024-02-29 13:14:15+00'::timestamptz", dests: into[string]()},
		{name: "uuid to string", query: "SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid", dests: into[string]()},
		{name: "uuid to [16]byte", query: "SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid", dests: into[[16]byte]()},
		{name: "interval to string", query: "SELECT '1 day 2 hours'::interval", dests: into[string]()},
		{name: "inet to string", query: "SELECT '127.0.0.1/32'::inet", dests: into[string]()},
		{name: "int4[] to string", query: "SELECT array[1,2]::int4[]", dests: into[string]()},
		{name: "int4[] to []byte", query: "SELECT array[1,2]::int4[]", dests: into[[]byte]()},
		{name: "jsonb to string", query: `SELECT '{"a":1}'::jsonb`, dests: into[string]()},
		{name: "jsonb to map", query: `SELECT '{"a":1}'::jsonb`, dests: into[map[string]any]()},
		{name: "jsonb to a struct", query: `SELECT '{"a":1}'::jsonb`, dests: into[struct{ A int }]()},
		{name: "any from int2, numeric, int4[], jsonb, bytea and NULL",
			query: `SELECT 42::int2, 1.25::numeric, array[1,2]::int4[], '9007199254740993'::jsonb, '\xab'::bytea, NULL::int4`,
			dests: func() []any { return []any{new(any), new(any), new(any), new(any), new(any), new(any)} }},
		{name: "*any from int4 and NULL", query: "SELECT 42::int4, NULL::int4",
			dests: func() []any { return []any{new(*any), new(*any)} }},
		{name: "mixed destinations", query: "SELECT 1::int4, 'x'::text, array['y']::text[], NULL::int8",
			dests: func() []any { return []any{new(int), new(sql.NullString), new([]string), new(sql.NullInt64)} }},
		{name: "too few destinations", query: "SELECT 1, 2", dests: into[int]()},
		{name: "sql.RawBytes from text, int4 and date", query: "SELECT 'raw'::text, 42::int4, '2024-01-02'::date", rows: true,
			dests: func() []any { return []any{new(sql.RawBytes), new(sql.RawBytes), new(sql.RawBytes)} }},
	}
	return append(cases, newerScanCases...)
}

// nilDestinationCases scan into nil destinations, each through Rows.Scan
// (see scanCase.rows): before Go 1.27 database/sql's conversion panics on
// some of them, a nil sql.Scanner and a nil *string or *any given a
// number among them, which strands the Rows and its connection.
func nilDestinationCases() []scanCase {
	var cases []scanCase
	for _, q := range []string{"SELECT 42::int4", "SELECT NULL::int4", "SELECT 'x'::text"} {
		for _, d := range []struct {
			name string
			dest any
		}{
			{"untyped nil", nil},
			{"nil *int64", (*int64)(nil)},
			{"nil *string", (*string)(nil)},
			{"nil *any", (*any)(nil)},
			{"nil *[]int32", (*[]int32)(nil)},
			{"nil *pgtype.FlatArray[int32]", (*pgtype.FlatArray[int32])(nil)},
			{"nil *sql.NullString (a sql.Scanner)", (*sql.NullString)(nil)},
			{"nil *pgtype.Int4 (a sql.Scanner)", (*pgtype.Int4)(nil)},
		} {
			cases = append(cases, scanCase{name: d.name + ", " + q, query: q, dests: dests(d.dest), rows: true})
		}
	}
	return cases
}

// scanResult is what one driver gave for a scanCase.
type scanResult struct {
	Values []any  // what each destination holds after the scan
	Err    string // the error, with the types in its chain
}

// scan runs c on db.
func (c scanCase) scan(ctx context.Context, db *sql.DB) scanResult {
	d := c.dests()
	var vals []any
	var err error
	if c.rows {
		// Abandoned Rows are on purpose, for TestMain's check.
		leakOnPurpose(func() { vals, err = scanRows(db, c.query, c.args, d) })
	} else {
		err = db.QueryRowContext(ctx, c.query, c.args...).Scan(d...)
		vals = pointees(d)
	}
	return scanResult{Values: vals, Err: describeErr(err)}
}

// scanRows scans the first row of query into dests with Rows.Scan, and
// survives database/sql's panic on a nil sql.Scanner before Go 1.27: the
// panic leaves the Rows' close lock held, so the Rows and its connection
// are abandoned, not closed. It uses no cancellable context, so that no
// database/sql goroutine waits on that lock.
func scanRows(db *sql.DB, query string, args, dests []any) (vals []any, err error) {
	rows, err := db.QueryContext(context.Background(), query, args...)
	if err != nil {
		return nil, err
	}
	if !rows.Next() {
		return nil, errors.Join(errors.New("no row"), rows.Err(), rows.Close())
	}
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic in Rows.Scan: %v", p)
			}
		}()
		err = rows.Scan(dests...)
	}()
	if err != nil && strings.HasPrefix(err.Error(), "panic in Rows.Scan") {
		return nil, err
	}
	vals = pointees(dests) // before Close: sql.RawBytes point into the Rows
	for i, v := range vals {
		if b, ok := v.(sql.RawBytes); ok {
			vals[i] = sql.RawBytes(bytes.Clone(b))
		}
	}
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return vals, err
}

// pointees returns what each destination points at; a nil destination
// as it is.
func pointees(dests []any) []any {
	out := make([]any, len(dests))
	for i, d := range dests {
		out[i] = d
		if v := reflect.ValueOf(d); v.Kind() == reflect.Pointer && !v.IsNil() {
			out[i] = v.Elem().Interface()
		}
	}
	return out
}

// TestPgxScanParity scans the same rows into the same destinations
// through sql.Open("pgx") and pgxleak.Open, in each of pgx's query exec
// modes (text and binary results), and requires the same values or the
// same error. On Go 1.27 and later both scan through pgx's
// driver.RowsColumnScanner, which pgxleak must forward; before, both
// through database/sql's own conversion.
func TestPgxScanParity(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	run := func(t *testing.T, dsn string, maxOpen int, cases []scanCase) {
		plain, err := sql.Open("pgx", dsn)
		require.NoError(t, err)
		defer plain.Close()
		plain.SetMaxOpenConns(maxOpen)
		leak, err := pgxleak.Open("pgx", dsn, pgxleak.WithLogger(quiet), pgxleak.WithMaxOpenConns(maxOpen))
		require.NoError(t, err)
		defer leak.Close()
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				want := c.scan(t.Context(), plain)
				got := c.scan(t.Context(), leak)
				assert.Equal(t, want, got, "pgx, then pgxleak")
				if testing.Verbose() {
					t.Logf("%v, error %s", got.Values, got.Err)
				}
			})
		}
		pgxleak.VerifyNone(t, leak, pgxleak.WithIgnoredFunction("github.com/pgxleak/pgxleak_test.leakOnPurpose"))
	}
	for _, mode := range []string{"cache_statement", "cache_describe", "describe_exec", "exec", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			run(t, pgtest.WithParams(dsn, map[string]string{"default_query_exec_mode": mode}), 2, scanCases())
		})
	}
	// In pgx's default mode only, and with room for the connections Go
	// before 1.27 strands (up to 8 a pool).
	t.Run("nil destinations", func(t *testing.T) {
		run(t, dsn, 10, nilDestinationCases())
	})
}
