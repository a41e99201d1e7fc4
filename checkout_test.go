package pgxleak_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/stack"
)

// leakRows runs a query on a context that can never be cancelled and drops
// the *sql.Rows without closing it: that connection never comes back.
//
//go:noinline
func leakRows(t *testing.T, db *sql.DB) (line site) {
	line = lineBelow()
	rows, err := db.Query("SELECT generate_series(1, 3)")
	if err != nil {
		t.Fatal(err)
	}
	_ = rows
	return line
}

//go:noinline
func leakQueryRow(db *sql.DB) (line site) {
	line = lineBelow()
	_ = db.QueryRow("SELECT 1") // never scanned
	return line
}

func TestWithoutStatements(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithoutStatements())
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ExecContext(context.Background(), "SELECT 'hidden'"); err != nil {
		t.Fatal(err)
	}
	if cs := checkouts(t, db); len(cs) != 1 || cs[0].LastStatement != "" {
		t.Fatalf("Checkouts = %+v", cs)
	}
}

// TestStackCaptureOffAndSampled: with capture off or sampled, checkouts are
// still tracked and counted; only the culprit is missing.
func TestStackCaptureOffAndSampled(t *testing.T) {
	for _, tc := range []struct {
		name         string
		opt          pgxleak.Option
		withCulprits int // of 4 sequential checkouts of one connection
	}{
		{"off", pgxleak.WithStackDepth(0), 0},
		{"sampled 1 in 2", pgxleak.WithStackSampling(2), 2},
		{"full", pgxleak.WithStackDepth(64), 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, _ := openTest(t, tc.opt, pgxleak.WithMaxOpenConns(1))
			got := 0
			for range 4 {
				c, err := db.Conn(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if cs := checkouts(t, db); len(cs) != 1 {
					t.Fatalf("not tracked: %v", cs)
				} else if cs[0].Culprit.Line != 0 {
					got++
				}
				c.Close()
			}
			if got != tc.withCulprits {
				t.Fatalf("%d checkouts with a culprit, want %d", got, tc.withCulprits)
			}
			if st := stats(t, db); st.Checkouts != 4 || st.Returns != 4 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestLastStatementBelongsToTheCheckout: a new checkout does not inherit
// the previous holder's statement.
func TestLastStatementBelongsToTheCheckout(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(1))
	if _, err := db.Exec("SELECT 'previous request'"); err != nil {
		t.Fatal(err)
	}
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cs := checkouts(t, db); len(cs) != 1 || cs[0].LastStatement != "" {
		t.Fatalf("Checkouts = %+v, want no statement yet", cs)
	}
}

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
		got[i] = heldStack(t, &fakeConnector{}, path, fp)
	}
	fp, rc := got[0], got[1]
	if len(fp) < len(rc) || !slices.Equal(fp[:len(rc)], rc) {
		t.Fatalf("frame pointers:\n%s\nruntime.Callers:\n%s",
			stackString(fp), stackString(rc))
	}
	if !hasFrame(fp, "holdAt") {
		t.Fatalf("no holdAt frame:\n%s", stackString(fp))
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
		{"memdriver", func(*testing.T) driver.Connector { return &fakeConnector{} }},
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
				t.Logf("%d frames:\n%s", len(got[0]), stackString(got[0]))
				if !slices.Equal(got[0], got[1]) {
					t.Fatalf("frame pointers:\n%s\nruntime.Callers:\n%s",
						stackString(got[0]), stackString(got[1]))
				}
				if !hasFrame(got[0], path.want) || !hasFrame(got[0], "TestCheckoutStackFramePointersMatchCallers") {
					t.Fatalf("expected %s and the test in the stack:\n%s", path.want, stackString(got[0]))
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
	cos := checkouts(t, db)
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

// TestCheckoutAllocations: tracking a checkout and its return allocates
// nothing beyond what database/sql allocates itself, and neither does a
// statement on a context that can be cancelled (not watched for garbage
// collection) beyond its Rows wrapper. The counts are compared with a
// plain pool over the same driver, in the same run.
func TestCheckoutAllocations(t *testing.T) {
	deadline, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	for _, tc := range []struct {
		name  string
		op    func(db *sql.DB) error
		extra float64
	}{
		{"conn and close", func(db *sql.DB) error {
			c, err := db.Conn(context.Background())
			if err != nil {
				return err
			}
			return c.Close()
		}, 0},
		{"exec", func(db *sql.DB) error {
			_, err := db.ExecContext(context.Background(), "UPDATE t SET n = 1")
			return err
		}, 0},
		{"query with a deadline", func(db *sql.DB) error {
			var n int64
			return db.QueryRowContext(deadline, "SELECT n FROM t").Scan(&n)
		}, 1},
		{"begin and commit", func(db *sql.DB) error {
			tx, err := db.BeginTx(context.Background(), nil)
			if err != nil {
				return err
			}
			return tx.Commit()
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if extra := extraAllocs(t, tc.op); extra > tc.extra {
				t.Errorf("%v allocations per operation beyond plain database/sql's, want at most %v", extra, tc.extra)
			}
		})
	}
}

// extraAllocs returns how many more allocations op makes on a pgxleak pool
// than on a plain one, both of 10 connections over the in-memory driver,
// with pgxleak's defaults (the stack of every checkout, GC detection).
func extraAllocs(t *testing.T, op func(db *sql.DB) error) float64 {
	t.Helper()
	plain := sql.OpenDB(&fakeConnector{})
	defer plain.Close()
	plain.SetMaxIdleConns(10)
	tracked, err := pgxleak.OpenDB(&fakeConnector{}, pgxleak.WithLogger(quiet), pgxleak.WithMaxOpenConns(10))
	if err != nil {
		t.Fatal(err)
	}
	defer tracked.Close()
	var n [2]float64
	for i, db := range []*sql.DB{plain, tracked} {
		n[i] = testing.AllocsPerRun(200, func() {
			if err := op(db); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Logf("allocations per operation: plain %v, pgxleak %v", n[0], n[1])
	return n[1] - n[0]
}
