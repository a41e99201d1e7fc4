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

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// Parity with pgx's stdlib driver: the same calls through sql.Open("pgx")
// and pgxleak.Open give the same results and the same errors, and pgx's
// own features stay reachable.

func compatExec(t testing.TB, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// compatPair opens the same fresh database twice: through plain pgx stdlib
// and through pgxleak.
func compatPair(t *testing.T, opts ...pgxleak.Option) (plain, leak *sql.DB, dsn string) {
	t.Helper()
	leak, dsn = openTest(t, opts...)
	plain, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
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
				if err := db.QueryRowContext(t.Context(), tc.query, tc.arg).Scan(scanTarget(dest)); err != nil {
					t.Fatalf("%s: %v", []string{"pgx", "pgxleak"}[i], err)
				}
				v := scanned(dest)
				if tc.norm != nil {
					v = tc.norm(v)
				}
				got[i] = v
				if tc.check != nil {
					if err := tc.check(v); err != nil {
						t.Errorf("%s: %v", []string{"pgx", "pgxleak"}[i], err)
					}
				} else if !reflect.DeepEqual(v, tc.want) {
					t.Errorf("%s: got %#v, want %#v", []string{"pgx", "pgxleak"}[i], v, tc.want)
				}
			}
			if tc.check == nil && !reflect.DeepEqual(got[0], got[1]) {
				t.Errorf("pgx gave %#v, pgxleak %#v", got[0], got[1])
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
		if _, err := db.ExecContext(ctx, `INSERT INTO types VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, r.args...); err != nil {
			t.Fatalf("insert %v: %v", r.args[0], err)
		}
	}
	c, err := pgx.Connect(ctx, pgtest.WithParams(dsn, map[string]string{"timezone": "UTC"}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	for _, r := range rows {
		var got string
		err := c.QueryRow(ctx, `SELECT concat_ws('|', id, coalesce(u::text, '<NULL>'), coalesce(j::text, '<NULL>'), coalesce(a::text, '<NULL>'),
			coalesce(n::float8::text, '<NULL>'), coalesce(ts::text, '<NULL>'), coalesce(iv::text, '<NULL>'), coalesce(note, '<NULL>'))
			FROM types WHERE id = $1`, r.args[0]).Scan(&got)
		if err != nil {
			t.Fatal(err)
		}
		if got != r.want {
			t.Errorf("row %v:\n got %s\nwant %s", r.args[0], got, r.want)
		}
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
	before := pgxleak.Stats(db).Checkouts

	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	var copied int64
	var out bytes.Buffer
	err = conn.Raw(func(dc any) error {
		pc, ok := pgxleak.PgxConn(dc)
		if !ok {
			return fmt.Errorf("PgxConn(%T) = false", dc)
		}
		if got := len(pgxleak.Checkouts(db)); got != 1 {
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
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	if copied != n {
		t.Errorf("CopyFrom copied %d rows, want %d", copied, n)
	}
	if want := "0\titem 0\t{t,0}\n1\titem 1\t{t,1}\n2\titem 2\t{t,2}\n"; out.String() != want {
		t.Errorf("COPY TO gave %q, want %q", out.String(), want)
	}
	var count int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM items").Scan(&count); err != nil || count != n {
		t.Errorf("count = %d, %v; want %d", count, err, n)
	}
	if got := pgxleak.Stats(db).Checkouts - before; got != 2 {
		t.Errorf("tracker counted %d checkouts for the Raw conn and the count query, want 2", got)
	}
	pgxleak.VerifyNone(t, db)
}

// TestPgxListenNotifyThroughEscapeHatch listens on a tracked connection
// through pgx, notifies from another, and receives the notification.
func TestPgxListenNotifyThroughEscapeHatch(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t)
	ctx := t.Context()
	listener, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
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
	if err := withPgx(func(pc *pgx.Conn) error { _, err := pc.Exec(ctx, `LISTEN "pgxleak events"`); return err }); err != nil {
		t.Fatal(err)
	}
	var listenerPID int
	if err := listener.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&listenerPID); err != nil {
		t.Fatal(err)
	}
	for _, payload := range []string{"first", "second: ünïcode"} {
		if _, err := db.ExecContext(ctx, `SELECT pg_notify('pgxleak events', $1)`, payload); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := withPgx(func(pc *pgx.Conn) error {
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
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := withPgx(func(pc *pgx.Conn) error { _, err := pc.Exec(ctx, "UNLISTEN *"); return err }); err != nil {
		t.Fatal(err)
	}
	if err := listener.Close(); err != nil {
		t.Fatal(err)
	}
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
		if err != nil {
			t.Fatal(err)
		}
		const q = "SELECT $1::int * $2::int"
		stmt, err := conn.PrepareContext(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		prepared := func() int {
			var n int
			if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1", q).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if n := prepared(); n != 1 {
			t.Errorf("%s: %d server-side statements for %q after Prepare, want 1", name, n, q)
		}
		for _, a := range []int{2, 3, 4} {
			var got int
			if err := stmt.QueryRowContext(ctx, a, 10).Scan(&got); err != nil || got != a*10 {
				t.Errorf("%s: stmt(%d, 10) = %d, %v", name, a, got, err)
			}
		}
		if err := stmt.Close(); err != nil {
			t.Fatal(err)
		}
		if n := prepared(); n != 0 {
			t.Errorf("%s: %d server-side statements left after Stmt.Close, want 0", name, n)
		}
		if err := conn.Close(); err != nil {
			t.Fatal(err)
		}

		// A pool-level statement, re-executed on whatever connection, and
		// inside a transaction.
		dbStmt, err := db.PrepareContext(ctx, "SELECT $1::text || '!'")
		if err != nil {
			t.Fatal(err)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var s string
		if err := tx.StmtContext(ctx, dbStmt).QueryRowContext(ctx, "in tx").Scan(&s); err != nil || s != "in tx!" {
			t.Errorf("%s: tx stmt = %q, %v", name, s, err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := dbStmt.QueryRowContext(ctx, "pool").Scan(&s); err != nil || s != "pool!" {
			t.Errorf("%s: db stmt = %q, %v", name, s, err)
		}
		if err := dbStmt.Close(); err != nil {
			t.Fatal(err)
		}
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
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close(context.Background())
	sleeping := func(pid int) bool {
		var n int
		if err := observer.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%'`, pid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	for i, db := range []*sql.DB{plain, leak} {
		name := []string{"pgx", "pgxleak"}[i]
		t.Run(name, func(t *testing.T) {
			conn, err := db.Conn(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var pid int
			if err := conn.QueryRowContext(t.Context(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}
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
				t.Fatal("the query did not return within 15s of cancelling its context")
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("error = %v, want one that is context.Canceled", err)
			}
			pgtest.WaitFor(t, 15*time.Second, "the server to stop the cancelled pg_sleep", func() bool { return !sleeping(pid) })
			if el := time.Since(start); el > 30*time.Second {
				t.Errorf("the query ran %v; the cancel did not reach the server", el)
			}
		})
	}
	pgxleak.VerifyNone(t, leak)
}

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
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plain.SetMaxOpenConns(1) // temp tables and session state land where they would with pgxleak's
	leak, _ := openTest(t, pgxleak.WithMaxOpenConns(1))
	for _, db := range []*sql.DB{plain, leak} {
		if _, err := db.ExecContext(ctx, schema); err != nil {
			t.Fatal(err)
		}
	}
	for _, pc := range parityCalls() {
		t.Run(pc.name, func(t *testing.T) {
			want, wantErr := pc.call(ctx, plain)
			got, gotErr := pc.call(ctx, leak)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("results differ:\npgx:     %v\npgxleak: %v", want, got)
			}
			if describeErr(gotErr) != describeErr(wantErr) {
				t.Errorf("errors differ:\npgx:     %s\npgxleak: %s", describeErr(wantErr), describeErr(gotErr))
			}
			for _, sentinel := range []error{sql.ErrNoRows, sql.ErrTxDone, context.Canceled} {
				if errors.Is(wantErr, sentinel) != errors.Is(gotErr, sentinel) {
					t.Errorf("errors.Is(err, %v): pgx %v, pgxleak %v", sentinel, errors.Is(wantErr, sentinel), errors.Is(gotErr, sentinel))
				}
			}
			if reflect.TypeOf(gotErr) != reflect.TypeOf(wantErr) {
				t.Errorf("pgxleak's error is a %T, pgx's a %T: driver errors must pass through unwrapped (GORM type-asserts *pgconn.PgError)", gotErr, wantErr)
			}
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
