package pgxleak_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/stack"
)

// The checkout stacks pgxleak reports are captured by unwinding frame
// pointers (internal/stack). These tests take the same checkout twice on
// each real call path, once with frame pointers and once with
// runtime.Callers, and require the reported stacks to be identical, frame
// for frame: through database/sql's paths (Conn, Tx, Rows, prepared
// statements, QueryRow), over the in-memory driver and over pgx against
// the real server. The sqlx and GORM paths are in the integration module.

// holdPath leaves one connection checked out of db and returns a function
// that gives it back.
type holdPath struct {
	name string
	want string // a function that must be in the stack
	hold func(t *testing.T, db *sql.DB) (release func())
}

var holdPaths = []holdPath{
	{"db.Conn", "database/sql.(*DB).Conn", func(t *testing.T, db *sql.DB) func() {
		c, err := db.Conn(context.Background())
		must(t, err)
		return func() { _ = c.Close() }
	}},
	{"db.BeginTx", "database/sql.(*DB).BeginTx", func(t *testing.T, db *sql.DB) func() {
		tx, err := db.BeginTx(context.Background(), nil)
		must(t, err)
		return func() { _ = tx.Rollback() }
	}},
	{"db.Query", "database/sql.(*DB).Query", func(t *testing.T, db *sql.DB) func() {
		rows, err := db.Query("SELECT 1")
		must(t, err)
		return func() { _ = rows.Close() }
	}},
	{"db.QueryContext cancellable", "database/sql.(*DB).QueryContext", func(t *testing.T, db *sql.DB) func() {
		ctx, cancel := context.WithCancel(context.Background())
		rows, err := db.QueryContext(ctx, "SELECT 1")
		must(t, err)
		return func() { _ = rows.Close(); cancel() }
	}},
	{"stmt.Query", "database/sql.(*Stmt).Query", func(t *testing.T, db *sql.DB) func() {
		st, err := db.Prepare("SELECT 1")
		must(t, err)
		rows, err := st.Query()
		must(t, err)
		return func() { _ = rows.Close(); _ = st.Close() }
	}},
}

// TestCheckoutStackDeeperThanBuffer: with a stack deeper than the 32
// recorded frames, runtime.Callers records 32 logical frames, and
// frame-pointer unwinding 32 physical ones, which expand to at least as
// many; the innermost frames are the same.
func TestCheckoutStackDeeperThanBuffer(t *testing.T) {
	if !stack.FramePointers() {
		t.Skip("frame-pointer unwinding is off")
	}
	path := holdPath{"deep db.Conn", "database/sql.(*DB).Conn", func(t *testing.T, db *sql.DB) func() {
		c, err := holdAt(db, 40)
		must(t, err)
		return func() { _ = c.Close() }
	}}
	var got [2][]pgxleak.Frame
	for i, fp := range []bool{true, false} {
		got[i] = heldStack(t, &memConnector{}, path, fp)
	}
	fp, rc := got[0], got[1]
	if len(fp) < len(rc) || !slices.Equal(fp[:len(rc)], rc) {
		t.Fatalf("frame pointers:\n%s\nruntime.Callers:\n%s",
			pgxleak.Checkout{Stack: fp}.StackString(), pgxleak.Checkout{Stack: rc}.StackString())
	}
	if !hasFrame(fp, "holdAt") {
		t.Fatalf("no holdAt frame:\n%s", pgxleak.Checkout{Stack: fp}.StackString())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCheckoutStackFramePointersMatchCallers(t *testing.T) {
	if !stack.FramePointers() {
		t.Skipf("frame-pointer unwinding is off on %s (PGXLEAK_FPUNWIND=0, build tag, or architecture)", runtime.GOARCH)
	}
	backends := []struct {
		name      string
		connector func(t *testing.T) driver.Connector
	}{
		{"memdriver", func(*testing.T) driver.Connector { return &memConnector{} }},
		{"postgres", func(t *testing.T) driver.Connector {
			cfg, err := pgx.ParseConfig(pgtest.AdminDSN(t))
			must(t, err)
			return stdlib.GetConnector(*cfg)
		}},
	}
	for _, be := range backends {
		for _, path := range holdPaths {
			t.Run(be.name+"/"+path.name, func(t *testing.T) {
				var got [2][]pgxleak.Frame
				for i, fp := range []bool{true, false} {
					got[i] = heldStack(t, be.connector(t), path, fp)
				}
				t.Logf("%d frames:\n%s", len(got[0]), pgxleak.Checkout{Stack: got[0]}.StackString())
				if !slices.Equal(got[0], got[1]) {
					t.Fatalf("frame pointers:\n%s\nruntime.Callers:\n%s",
						pgxleak.Checkout{Stack: got[0]}.StackString(), pgxleak.Checkout{Stack: got[1]}.StackString())
				}
				if !hasFrame(got[0], path.want) || !hasFrame(got[0], "TestCheckoutStackFramePointersMatchCallers") {
					t.Fatalf("expected %s and the test in the stack:\n%s", path.want, pgxleak.Checkout{Stack: got[0]}.StackString())
				}
			})
		}
	}
}

// heldStack opens a pool of one connection over c, checks that connection
// out through path with frame-pointer unwinding on or off, and returns the
// stack pgxleak reports for it. The connection has been used once before,
// so the checkout goes through ResetSession in both runs.
func heldStack(t *testing.T, c driver.Connector, path holdPath, fp bool) []pgxleak.Frame {
	t.Helper()
	db, err := pgxleak.OpenDB(c, pgxleak.WithMaxOpenConns(1), pgxleak.WithLogger(quiet))
	must(t, err)
	defer db.Close()
	must(t, db.Ping())
	was := stack.SetFramePointers(fp)
	release := path.hold(t, db)
	stack.SetFramePointers(was)
	defer release()
	cos := pgxleak.Checkouts(db)
	if len(cos) != 1 {
		t.Fatalf("%d checkouts, want 1", len(cos))
	}
	return cos[0].Stack
}

func hasFrame(fs []pgxleak.Frame, fn string) bool {
	for _, f := range fs {
		if strings.Contains(f.Function, fn) {
			return true
		}
	}
	return false
}
