package pgxleak_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	_ "github.com/jackc/pgx/v5/stdlib" // the plain "pgx" driver, for parity
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// Parity with pgx's stdlib driver: the same calls through sql.Open("pgx")
// and pgxleak.Open give the same results and the same errors, and pgx's
// own features stay reachable.

func compatExec(t testing.TB, db *sql.DB, query string, args ...any) {
	t.Helper()
	_, err := db.ExecContext(context.Background(), query, args...)
	require.NoError(t, err, query)
}

// compatPair opens the same fresh database twice: through plain pgx stdlib
// and through pgxleak.
func compatPair(t *testing.T, opts ...pgxleak.Option) (plain, leak *sql.DB, dsn string) {
	t.Helper()
	leak, dsn = openTest(t, opts...)
	plain, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	plain.SetMaxOpenConns(4)
	t.Cleanup(func() { _ = plain.Close() })
	return plain, leak, dsn
}

// typeCase round-trips one value through the server: the argument is bound
// to $1 and scanned back into dest.
type typeCase struct {
	name  string
	query string
	arg   any
	dest  func() any      // a fresh pointer to scan into
	want  any             // the value dest should point at
	norm  func(any) any   // optional normaliser of the scanned value
	check func(any) error // optional extra check instead of want
}

func compatTypeCases() []typeCase {
	m := pgtype.NewMap()
	ts := time.Date(2024, 2, 29, 13, 14, 15, 123456000, time.FixedZone("UTC+5", 5*3600))
	str := func(s string) *string { return &s }
	arrScan := func(p any) any { return m.SQLScanner(p) }
	return typeCaseList{
		{name: "uuid as string", query: "SELECT $1::uuid", arg: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
			dest: func() any { return new(string) }, want: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{name: "uuid as pgtype.UUID", query: "SELECT $1::uuid",
			arg:  pgtype.UUID{Bytes: [16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}, Valid: true},
			dest: func() any { return new(pgtype.UUID) },
			want: pgtype.UUID{Bytes: [16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}, Valid: true}},
		{name: "uuid generated", query: "SELECT gen_random_uuid()::text || $1::text", arg: "",
			dest: func() any { return new(string) },
			check: func(v any) error {
				if s := v.(string); len(s) != 36 || strings.Count(s, "-") != 4 {
					return fmt.Errorf("not a uuid: %q", s)
				}
				return nil
			}},
		{name: "jsonb from string", query: "SELECT $1::jsonb", arg: `{"b": [1, 2, {"c": null}], "a": "x"}`,
			dest: func() any { return new(string) }, want: `{"a": "x", "b": [1, 2, {"c": null}]}`},
		{name: "jsonb from map", query: "SELECT $1::jsonb", arg: map[string]any{"k": []any{1.5, "v", true}},
			dest: func() any { return new([]byte) },
			norm: func(v any) any {
				var out any
				if err := json.Unmarshal(v.([]byte), &out); err != nil {
					return err.Error()
				}
				return out
			},
			want: map[string]any{"k": []any{1.5, "v", true}}},
		{name: "jsonb null vs SQL NULL", query: "SELECT $1::jsonb", arg: nil,
			dest: func() any { return new(sql.NullString) }, want: sql.NullString{}},
		{name: "int8 array", query: "SELECT $1::int8[]", arg: []int64{1, -2, 1 << 40},
			dest: func() any { return new([]int64) }, want: []int64{1, -2, 1 << 40}},
		{name: "text array with NULL and quotes", query: "SELECT $1::text[]", arg: []*string{str(`a,"b"`), nil, str("{}")},
			dest: func() any { return new([]*string) },
			norm: func(v any) any {
				var out []string
				for _, p := range v.([]*string) {
					if p == nil {
						out = append(out, "<NULL>")
					} else {
						out = append(out, *p)
					}
				}
				return out
			},
			want: []string{`a,"b"`, "<NULL>", "{}"}},
		{name: "2-D int array", query: "SELECT $1::int4[][]", arg: [][]int32{{1, 2}, {3, 4}},
			dest: func() any { return &arrayDest{ptr: new(pgtype.Array[int32]), wrap: arrScan} },
			norm: func(v any) any { a := v.(pgtype.Array[int32]); return fmt.Sprint(a.Dims, a.Elements) },
			want: "[{2 1} {2 1}] [1 2 3 4]"},
		{name: "numeric as string", query: "SELECT $1::numeric", arg: "12345678901234567890.000000001",
			dest: func() any { return new(string) }, want: "12345678901234567890.000000001"},
		{name: "numeric as pgtype.Numeric", query: "SELECT $1::numeric * 2", arg: "-0.5",
			dest: func() any { return new(pgtype.Numeric) },
			norm: func(v any) any {
				f, err := v.(pgtype.Numeric).Float64Value()
				if err != nil {
					return err.Error()
				}
				return f.Float64
			},
			want: -1.0},
		{name: "numeric NaN", query: "SELECT 'NaN'::numeric + $1::int", arg: 1,
			dest: func() any { return new(string) }, want: "NaN"},
		{name: "timestamptz", query: "SELECT $1::timestamptz", arg: ts,
			dest: func() any { return new(time.Time) },
			norm: func(v any) any { return v.(time.Time).UTC().Format(time.RFC3339Nano) },
			want: ts.UTC().Format(time.RFC3339Nano)},
		{name: "timestamptz infinity", query: "SELECT 'infinity'::timestamptz::text || $1::text", arg: "",
			dest: func() any { return new(string) }, want: "infinity"},
		{name: "interval as pgtype.Interval", query: "SELECT $1::interval",
			arg:  pgtype.Interval{Months: 14, Days: 3, Microseconds: 3723000001, Valid: true},
			dest: func() any { return new(pgtype.Interval) },
			want: pgtype.Interval{Months: 14, Days: 3, Microseconds: 3723000001, Valid: true}},
		{name: "interval from time.Duration", query: "SELECT $1::interval", arg: 90 * time.Minute,
			dest: func() any { return new(string) }, want: "01:30:00"},
		{name: "interval from string", query: "SELECT $1::interval", arg: "1 year 2 mons 3 days",
			dest: func() any { return new(pgtype.Interval) },
			want: pgtype.Interval{Months: 14, Days: 3, Valid: true}},
		{name: "NULL text into NullString", query: "SELECT $1::text", arg: nil,
			dest: func() any { return new(sql.NullString) }, want: sql.NullString{}},
		{name: "NULL int into *int", query: "SELECT $1::int", arg: nil,
			dest: func() any { return new(*int) }, want: (*int)(nil)},
		{name: "NULL timestamptz into sql.Null[time.Time]", query: "SELECT $1::timestamptz", arg: nil,
			dest: func() any { return new(sql.Null[time.Time]) }, want: sql.Null[time.Time]{}},
		{name: "typed nil pointer is NULL", query: "SELECT $1::text IS NULL", arg: (*string)(nil),
			dest: func() any { return new(bool) }, want: true},
		{name: "bytea", query: "SELECT $1::bytea", arg: []byte{0, 1, 0xfe, 0xff},
			dest: func() any { return new([]byte) }, want: []byte{0, 1, 0xfe, 0xff}},
		{name: "int8 extremes", query: "SELECT $1::int8 - 1", arg: int64(-1 << 62),
			dest: func() any { return new(int64) }, want: int64(-1<<62) - 1},
	}.withArrayScan(arrScan)
}

type typeCaseList []typeCase

// withArrayScan makes slice destinations scan through pgtype's SQLScanner,
// which is how database/sql code reads PostgreSQL arrays with pgx.
func (cs typeCaseList) withArrayScan(wrap func(any) any) []typeCase {
	for i := range cs {
		d := cs[i].dest
		if k := reflect.TypeOf(d()).Elem().Kind(); k == reflect.Slice && reflect.TypeOf(d()).Elem().Elem().Kind() != reflect.Uint8 {
			cs[i].dest = func() any { return &arrayDest{ptr: d(), wrap: wrap} }
		}
	}
	return cs
}

// arrayDest scans through a wrapper and is read back through ptr.
type arrayDest struct {
	ptr  any
	wrap func(any) any
}

func scanTarget(dest any) any {
	if a, ok := dest.(*arrayDest); ok {
		return a.wrap(a.ptr)
	}
	return dest
}

func scanned(dest any) any {
	if a, ok := dest.(*arrayDest); ok {
		return reflect.ValueOf(a.ptr).Elem().Interface()
	}
	return reflect.ValueOf(dest).Elem().Interface()
}

// TestPgxTypeRoundTrips sends values of PostgreSQL's awkward types through
// the server and back, through plain pgx and through pgxleak, and checks
// that both give the expected value.
func TestPgxTypeRoundTrips(t *testing.T) {
	t.Parallel()
	plain, leak, _ := compatPair(t)
	for _, tc := range compatTypeCases() {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]any
			for i, db := range []*sql.DB{plain, leak} {
				dest := tc.dest()
				require.NoError(t, db.QueryRowContext(t.Context(), tc.query, tc.arg).Scan(scanTarget(dest)), "%s", []string{"pgx", "pgxleak"}[i])
				v := scanned(dest)
				if tc.norm != nil {
					v = tc.norm(v)
				}
				got[i] = v
				if tc.check != nil {
					assert.NoError(t, tc.check(v), []string{"pgx", "pgxleak"}[i])
				} else {
					assert.Equal(t, tc.want, v, []string{"pgx", "pgxleak"}[i])
				}
			}
			if tc.check == nil {
				assert.Equal(t, got[0], got[1], "pgx (expected) and pgxleak (actual)")
			}
		})
	}
	pgxleak.VerifyNone(t, leak)
}

// TestPgxTypesInTable stores every awkward type in a table through the
// wrapper, NULLs included, and reads the row back with pgx directly.
func TestPgxTypesInTable(t *testing.T) {
	t.Parallel()
	db, dsn := openTest(t)
	ctx := t.Context()
	compatExec(t, db, `CREATE TABLE types (id int PRIMARY KEY, u uuid, j jsonb, a text[], n numeric(30,10), ts timestamptz, iv interval, note text)`)
	ts := time.Date(2001, 9, 9, 1, 46, 40, 0, time.UTC)
	rows := []struct {
		args []any
		want string
	}{
		{[]any{1, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", `{"x": 1}`, []string{"p", "q"}, "3.1415926535", ts, 36 * time.Hour, "n"},
			`1|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|{"x": 1}|{p,q}|3.1415926535|2001-09-09 01:46:40+00|36:00:00|n`},
		{[]any{2, nil, nil, nil, nil, nil, nil, nil}, `2|<NULL>|<NULL>|<NULL>|<NULL>|<NULL>|<NULL>|<NULL>`},
	}
	for _, r := range rows {
		_, err := db.ExecContext(ctx, `INSERT INTO types VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, r.args...)
		require.NoError(t, err, "insert %v", r.args[0])
	}
	c, err := pgx.Connect(ctx, pgtest.WithParams(dsn, map[string]string{"timezone": "UTC"}))
	require.NoError(t, err)
	defer c.Close(context.Background())
	for _, r := range rows {
		var got string
		err := c.QueryRow(ctx, `SELECT concat_ws('|', id, coalesce(u::text, '<NULL>'), coalesce(j::text, '<NULL>'), coalesce(a::text, '<NULL>'),
			coalesce(n::float8::text, '<NULL>'), coalesce(ts::text, '<NULL>'), coalesce(iv::text, '<NULL>'), coalesce(note, '<NULL>'))
			FROM types WHERE id = $1`, r.args[0]).Scan(&got)
		require.NoError(t, err)
		assert.Equal(t, r.want, got, "row %v", r.args[0])
	}
	pgxleak.VerifyNone(t, db)
}

// TestPgxCopyThroughEscapeHatch runs COPY FROM and COPY TO on the pgx
// connection behind a tracked *sql.Conn, and checks the tracker saw the
// checkout and its return.
func TestPgxCopyThroughEscapeHatch(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t)
	ctx := t.Context()
	compatExec(t, db, `CREATE TABLE items (id int PRIMARY KEY, name text, tags text[])`)
	before := stats(t, db).Checkouts

	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	const n = 1000
	var copied int64
	var out bytes.Buffer
	err = conn.Raw(func(dc any) error {
		pc, ok := pgxleak.PgxConn(dc)
		if !ok {
			return fmt.Errorf("PgxConn(%T) = false", dc)
		}
		if got := len(checkouts(t, db)); got != 1 {
			return fmt.Errorf("%d checkouts seen inside Raw, want 1", got)
		}
		src := pgx.CopyFromSlice(n, func(i int) ([]any, error) {
			return []any{i, fmt.Sprintf("item %d", i), []string{"t", fmt.Sprint(i % 3)}}, nil
		})
		if copied, err = pc.CopyFrom(ctx, pgx.Identifier{"items"}, []string{"id", "name", "tags"}, src); err != nil {
			return err
		}
		_, err := pc.PgConn().CopyTo(ctx, &out, "COPY (SELECT id, name, tags FROM items WHERE id < 3 ORDER BY id) TO STDOUT")
		return err
	})
	require.NoError(t, err)
	require.NoError(t, conn.Close())
	assert.EqualValues(t, n, copied, "rows CopyFrom copied")
	assert.Equal(t, "0\titem 0\t{t,0}\n1\titem 1\t{t,1}\n2\titem 2\t{t,2}\n", out.String(), "COPY TO")
	var count int
	assert.NoError(t, db.QueryRowContext(ctx, "SELECT count(*) FROM items").Scan(&count))
	assert.EqualValues(t, n, count, "rows in the table")
	assert.EqualValues(t, 2, stats(t, db).Checkouts-before, "checkouts for the Raw conn and the count query")
	pgxleak.VerifyNone(t, db)
}

// TestPgxListenNotifyThroughEscapeHatch listens on a tracked connection
// through pgx, notifies from another, and receives the notification.
func TestPgxListenNotifyThroughEscapeHatch(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t)
	ctx := t.Context()
	listener, err := db.Conn(ctx)
	require.NoError(t, err)
	defer listener.Close()
	withPgx := func(f func(*pgx.Conn) error) error {
		return listener.Raw(func(dc any) error {
			pc, ok := pgxleak.PgxConn(dc)
			if !ok {
				return fmt.Errorf("PgxConn(%T) = false", dc)
			}
			return f(pc)
		})
	}
	require.NoError(t, withPgx(func(pc *pgx.Conn) error { _, err := pc.Exec(ctx, `LISTEN "pgxleak events"`); return err }))
	var listenerPID int
	require.NoError(t, listener.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&listenerPID))
	for _, payload := range []string{"first", "second: ünïcode"} {
		_, err := db.ExecContext(ctx, `SELECT pg_notify('pgxleak events', $1)`, payload)
		require.NoError(t, err)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = withPgx(func(pc *pgx.Conn) error {
			n, err := pc.WaitForNotification(wctx)
			if err != nil {
				return err
			}
			if n.Channel != "pgxleak events" || n.Payload != payload || int(n.PID) == listenerPID {
				return fmt.Errorf("notification %+v, want payload %q on 'pgxleak events' from another backend", n, payload)
			}
			return nil
		})
		cancel()
		require.NoError(t, err)
	}
	require.NoError(t, withPgx(func(pc *pgx.Conn) error { _, err := pc.Exec(ctx, "UNLISTEN *"); return err }))
	require.NoError(t, listener.Close())
	pgxleak.VerifyNone(t, db)
}

// TestPgxPreparedStatements checks that database/sql's prepared statements
// are real server-side statements through the wrapper, reusable, usable in
// a transaction, and deallocated on Close.
func TestPgxPreparedStatements(t *testing.T) {
	t.Parallel()
	plain, leak, _ := compatPair(t)
	for i, db := range []*sql.DB{plain, leak} {
		name := []string{"pgx", "pgxleak"}[i]
		ctx := t.Context()
		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		const q = "SELECT $1::int * $2::int"
		stmt, err := conn.PrepareContext(ctx, q)
		require.NoError(t, err)
		prepared := func() int {
			var n int
			require.NoError(t, conn.QueryRowContext(ctx, "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1", q).Scan(&n))
			return n
		}
		assert.Equal(t, 1, prepared(), "%s: server-side statements for %q after Prepare", name, q)
		for _, a := range []int{2, 3, 4} {
			var got int
			assert.NoError(t, stmt.QueryRowContext(ctx, a, 10).Scan(&got), "%s: stmt(%d, 10)", name, a)
			assert.Equal(t, a*10, got, "%s: stmt(%d, 10)", name, a)
		}
		require.NoError(t, stmt.Close())
		assert.Zero(t, prepared(), "%s: server-side statements left after Stmt.Close", name)
		require.NoError(t, conn.Close())

		// A pool-level statement, re-executed on whatever connection, and
		// inside a transaction.
		dbStmt, err := db.PrepareContext(ctx, "SELECT $1::text || '!'")
		require.NoError(t, err)
		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		var s string
		assert.NoError(t, tx.StmtContext(ctx, dbStmt).QueryRowContext(ctx, "in tx").Scan(&s), "%s: tx stmt", name)
		assert.Equal(t, "in tx!", s, "%s: tx stmt", name)
		require.NoError(t, tx.Commit())
		assert.NoError(t, dbStmt.QueryRowContext(ctx, "pool").Scan(&s), "%s: db stmt", name)
		assert.Equal(t, "pool!", s, "%s: db stmt", name)
		require.NoError(t, dbStmt.Close())
	}
	pgxleak.VerifyNone(t, leak)
}

// TestPgxQueryCancellation cancels a long pg_sleep through plain pgx and
// through pgxleak and checks the query stops on the server, not only in
// the client: pg_stat_activity must show the backend no longer sleeping
// long before the sleep would have ended.
func TestPgxQueryCancellation(t *testing.T) {
	t.Parallel()
	plain, leak, dsn := compatPair(t)
	observer, err := pgx.Connect(t.Context(), pgtest.WithParams(dsn, map[string]string{"application_name": "pgxleak_observer"}))
	require.NoError(t, err)
	defer observer.Close(context.Background())
	sleeping := func(pid int) bool {
		var n int
		require.NoError(t, observer.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%'`, pid).Scan(&n))
		return n > 0
	}
	for i, db := range []*sql.DB{plain, leak} {
		name := []string{"pgx", "pgxleak"}[i]
		t.Run(name, func(t *testing.T) {
			conn, err := db.Conn(t.Context())
			require.NoError(t, err)
			defer conn.Close()
			var pid int
			require.NoError(t, conn.QueryRowContext(t.Context(), "SELECT pg_backend_pid()").Scan(&pid))
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			start := time.Now()
			go func() {
				_, err := conn.ExecContext(ctx, "SELECT pg_sleep(60)")
				done <- err
			}()
			pgtest.WaitFor(t, 10*time.Second, "the backend to start sleeping", func() bool { return sleeping(pid) })
			cancel()
			select {
			case err = <-done:
			case <-time.After(15 * time.Second):
				require.FailNow(t, "the query did not return within 15s of cancelling its context")
			}
			assert.ErrorIs(t, err, context.Canceled)
			pgtest.WaitFor(t, 15*time.Second, "the server to stop the cancelled pg_sleep", func() bool { return !sleeping(pid) })
			assert.LessOrEqual(t, time.Since(start), 30*time.Second, "the query ran on: the cancel did not reach the server")
		})
	}
	pgxleak.VerifyNone(t, leak)
}
