package pgtest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(M(m).Run()) }

func TestNewDatabaseIsolated(t *testing.T) {
	t.Parallel()
	a, b := NewDatabase(t), NewDatabase(t)
	Exec(t, a, "CREATE TABLE only_in_a (x int)")
	ctx := context.Background()
	c, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database b sees a's table")
	}
}

func TestClusterRestart(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, Setting("max_connections", "15"))
	ctx := context.Background()
	var max string
	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SHOW max_connections").Scan(&max); err != nil || max != "15" {
		t.Fatalf("max_connections = %q, %v", max, err)
	}
	conn.Close(ctx)
	if err := c.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.Connect(ctx, c.DSN()); err == nil {
		t.Fatal("connected to a stopped cluster")
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, c.DSN())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
}

func TestWithParams(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u@h:5/db?sslmode=disable", "postgres://u@h:5/x?application_name=x&sslmode=disable"},
		{"host=h user=u", "host=h user=u dbname='x' application_name='x'"},
	} {
		got := WithParams(tc.in, map[string]string{"dbname": "x", "application_name": "x"})
		cfgGot, err1 := pgx.ParseConfig(got)
		cfgWant, err2 := pgx.ParseConfig(tc.want)
		if err1 != nil || err2 != nil || cfgGot.Database != cfgWant.Database || cfgGot.RuntimeParams["application_name"] != "x" {
			t.Errorf("WithParams(%q) = %q", tc.in, got)
		}
	}
}
