package pgxleak_test

import (
	"database/sql/driver"
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/pgxleak/pgxleak"
)

// optional lists the optional driver interfaces database/sql asserts.
var optional = []struct {
	name string
	typ  reflect.Type
}{
	{"Pinger", reflect.TypeFor[driver.Pinger]()},
	{"Execer", reflect.TypeFor[driver.Execer]()},
	{"ExecerContext", reflect.TypeFor[driver.ExecerContext]()},
	{"Queryer", reflect.TypeFor[driver.Queryer]()},
	{"QueryerContext", reflect.TypeFor[driver.QueryerContext]()},
	{"ConnPrepareContext", reflect.TypeFor[driver.ConnPrepareContext]()},
	{"ConnBeginTx", reflect.TypeFor[driver.ConnBeginTx]()},
	{"NamedValueChecker", reflect.TypeFor[driver.NamedValueChecker]()},
	{"SessionResetter", reflect.TypeFor[driver.SessionResetter]()},
	{"StmtExecContext", reflect.TypeFor[driver.StmtExecContext]()},
	{"StmtQueryContext", reflect.TypeFor[driver.StmtQueryContext]()},
	{"ColumnConverter", reflect.TypeFor[driver.ColumnConverter]()},
	{"RowsNextResultSet", reflect.TypeFor[driver.RowsNextResultSet]()},
	{"RowsColumnTypeScanType", reflect.TypeFor[driver.RowsColumnTypeScanType]()},
	{"RowsColumnTypeDatabaseTypeName", reflect.TypeFor[driver.RowsColumnTypeDatabaseTypeName]()},
	{"RowsColumnTypeLength", reflect.TypeFor[driver.RowsColumnTypeLength]()},
	{"RowsColumnTypeNullable", reflect.TypeFor[driver.RowsColumnTypeNullable]()},
	{"RowsColumnTypePrecisionScale", reflect.TypeFor[driver.RowsColumnTypePrecisionScale]()},
}

func implements(v any, t reflect.Type) bool { return reflect.TypeOf(v).Implements(t) }

// TestOptionalInterfacesMatchPgx checks, interface by interface, that the
// wrapped conn, stmt and rows implement exactly what pgx's do, plus
// driver.Validator on the conn.
func TestOptionalInterfacesMatchPgx(t *testing.T) {
	db, _ := openTest(t)
	ctx := t.Context()
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Raw(func(dc any) error {
		inner := dc.(interface{ Unwrap() driver.Conn }).Unwrap()
		if _, ok := inner.(*stdlib.Conn); !ok {
			t.Fatalf("Unwrap() = %T, want *stdlib.Conn", inner)
		}
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
			for _, o := range optional {
				if w, pl := implements(p.wrapped, o.typ), implements(p.plain, o.typ); w != pl {
					t.Errorf("%s: wrapped implements %s = %v, pgx = %v", p.what, o.name, w, pl)
				}
			}
		}
		if _, ok := dc.(driver.Validator); !ok {
			t.Error("wrapped conn is not a driver.Validator")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPgErrorPassesThroughUnwrapped(t *testing.T) {
	db, _ := openTest(t)
	_, err := db.Exec("SELECT * FROM no_such_table")
	pgErr, ok := err.(*pgconn.PgError) // GORM does exactly this
	if !ok {
		t.Fatalf("error is %T (%v), want *pgconn.PgError by plain type assertion", err, err)
	}
	if pgErr.Code != "42P01" {
		t.Fatalf("code = %s, want 42P01 (undefined_table)", pgErr.Code)
	}
}

func TestPgxConnEscapeHatch(t *testing.T) {
	db, _ := openTest(t)
	c, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Raw(func(dc any) error {
		pc, ok := pgxleak.PgxConn(dc)
		if !ok {
			t.Fatalf("PgxConn(%T) failed", dc)
		}
		var n int
		return pc.QueryRow(t.Context(), "SELECT 7").Scan(&n)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pgxleak.PgxConn("not a conn"); ok {
		t.Fatal("PgxConn accepted a string")
	}
}

// TestConnectionLeftInTransactionIsDiscarded: IsValid reports a connection
// whose transaction is still open as invalid, so database/sql closes it
// instead of handing it to the next caller mid-transaction.
func TestConnectionLeftInTransactionIsDiscarded(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(1))
	ctx := t.Context()
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid1 int
	if err := c.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, "BEGIN"); err != nil { // a transaction database/sql doesn't know of
		t.Fatal(err)
	}
	c.Close()
	if st := db.Stats(); st.Idle != 0 || st.OpenConnections != 0 {
		t.Fatalf("a connection left inside a transaction went back to the pool: %+v", st)
	}
	var pid2 int
	if err := db.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid2); err != nil {
		t.Fatal(err)
	}
	if pid1 == pid2 {
		t.Fatalf("connection %d was reused although it was left inside a transaction", pid1)
	}
}
