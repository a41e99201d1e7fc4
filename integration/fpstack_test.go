package integration_test

import (
	"database/sql"
	"database/sql/driver"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/stack"
)

// The root package's fpstack_test.go requires the stacks captured by
// unwinding frame pointers to equal runtime.Callers' on database/sql's own
// paths; these are the same checks through sqlx and GORM, over the
// in-memory driver and over pgx against the real server.

// holdPath leaves one connection checked out of db and returns a function
// that gives it back.
type holdPath struct {
	name string
	want string // a function that must be in the stack
	hold func(t *testing.T, db *sql.DB) (release func())
}

var holdPaths = []holdPath{
	{"sqlx Queryx", "github.com/jmoiron/sqlx.(*DB).Queryx", func(t *testing.T, db *sql.DB) func() {
		rows, err := sqlx.NewDb(db, "pgx").Queryx("SELECT 1")
		must(t, err)
		return func() { _ = rows.Close() }
	}},
	{"sqlx Beginx", "github.com/jmoiron/sqlx.(*DB).Beginx", func(t *testing.T, db *sql.DB) func() {
		tx, err := sqlx.NewDb(db, "pgx").Beginx()
		must(t, err)
		return func() { _ = tx.Rollback() }
	}},
	{"GORM Raw.Rows", "gorm.io/gorm.(*DB).Rows", func(t *testing.T, db *sql.DB) func() {
		rows, err := openGorm(t, db).Raw("SELECT 1").Rows()
		must(t, err)
		return func() { _ = rows.Close() }
	}},
	{"GORM Begin", "gorm.io/gorm.(*DB).Begin", func(t *testing.T, db *sql.DB) func() {
		tx := openGorm(t, db).Begin()
		must(t, tx.Error)
		return func() { tx.Rollback() }
	}},
}

func openGorm(t *testing.T, db *sql.DB) *gorm.DB {
	gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: db}),
		&gorm.Config{Logger: logger.Discard, DisableAutomaticPing: true, SkipDefaultTransaction: true})
	must(t, err)
	return gdb
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
