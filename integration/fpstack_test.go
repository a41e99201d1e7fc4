package integration_test

import (
	"database/sql"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgxleak/pgxleak/internal/leaktest"
)

// The root package's checkout_test.go requires the stacks captured by
// unwinding frame pointers to equal runtime.Callers' on database/sql's own
// paths; these are the same checks, through the same harness
// (internal/leaktest), on sqlx's and GORM's paths, over the in-memory
// driver and over pgx against the real server.

var holdPaths = []leaktest.HoldPath{
	{Name: "sqlx Queryx", Want: "github.com/jmoiron/sqlx.(*DB).Queryx", Hold: func(t *testing.T, db *sql.DB) func() {
		rows, err := sqlx.NewDb(db, "pgx").Queryx("SELECT 1")
		require.NoError(t, err)
		return func() { _ = rows.Close() }
	}},
	{Name: "sqlx Beginx", Want: "github.com/jmoiron/sqlx.(*DB).Beginx", Hold: func(t *testing.T, db *sql.DB) func() {
		tx, err := sqlx.NewDb(db, "pgx").Beginx()
		require.NoError(t, err)
		return func() { _ = tx.Rollback() }
	}},
	{Name: "GORM Raw.Rows", Want: "gorm.io/gorm.(*DB).Rows", Hold: func(t *testing.T, db *sql.DB) func() {
		rows, err := openGorm(t, db).Raw("SELECT 1").Rows()
		require.NoError(t, err)
		return func() { _ = rows.Close() }
	}},
	{Name: "GORM Begin", Want: "gorm.io/gorm.(*DB).Begin", Hold: func(t *testing.T, db *sql.DB) func() {
		tx := openGorm(t, db).Begin()
		require.NoError(t, tx.Error)
		return func() { tx.Rollback() }
	}},
}

func openGorm(t *testing.T, db *sql.DB) *gorm.DB {
	gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: db}),
		&gorm.Config{Logger: logger.Discard, DisableAutomaticPing: true, SkipDefaultTransaction: true})
	require.NoError(t, err)
	return gdb
}

func TestCheckoutStackFramePointersMatchCallers(t *testing.T) {
	leaktest.CheckFramePointerStacks(t, holdPaths)
}
