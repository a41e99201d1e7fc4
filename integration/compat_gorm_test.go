package integration_test

import (
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
)

type gormProduct struct {
	ID    uint   `gorm:"primaryKey"`
	Code  string `gorm:"uniqueIndex;not null"`
	Price int    `gorm:"check:price >= 0"`
	gorm.Model
}

// gormNoEvictionTTL is GORM's own "never evict" TTL for the PrepareStmt
// cache. With any other TTL, GORM starts a cache-sweeping goroutine that
// never exits (gorm.io/gorm/internal/lru says so), which TestMain's goleak
// check would report.
const gormNoEvictionTTL = 10 * 365 * 24 * time.Hour

// gormConfig returns a quiet GORM configuration for the tests.
func gormConfig(prepare bool) *gorm.Config {
	return &gorm.Config{TranslateError: true, PrepareStmt: prepare, PrepareStmtTTL: gormNoEvictionTTL, Logger: logger.Discard}
}

// gormOpeners are the two ways to put GORM on pgxleak.
var gormOpeners = []struct {
	name  string
	tuned bool // the pgxleak options reach the pool (not through sql.Open)
	open  func(t *testing.T, cfg *gorm.Config, opts ...pgxleak.Option) (*gorm.DB, *sql.DB)
}{
	{"Conn: pgxleak.Open", true, func(t *testing.T, cfg *gorm.Config, opts ...pgxleak.Option) (*gorm.DB, *sql.DB) {
		db, _ := openTest(t, opts...)
		gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: db}), cfg)
		require.NoError(t, err)
		return gdb, db
	}},
	{"DriverName: pgxleak", false, func(t *testing.T, cfg *gorm.Config, opts ...pgxleak.Option) (*gorm.DB, *sql.DB) {
		_, dsn := openTest(t)
		gdb, err := gorm.Open(postgres.New(postgres.Config{DriverName: "pgxleak", DSN: dsn}), cfg)
		require.NoError(t, err)
		db, err := gdb.DB()
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		_, err = pgxleak.Stats(db)
		require.NoError(t, err, "GORM's pool runs on %T, not pgxleak", db.Driver())
		return gdb, db
	}},
}

// TestGorm runs CRUD, transactions and error translation through GORM on
// pgxleak, opened both ways, with and without PrepareStmt.
func TestGorm(t *testing.T) {
	t.Parallel()
	for _, opener := range gormOpeners {
		for _, prepare := range []bool{false, true} {
			name := opener.name
			if prepare {
				name += ", PrepareStmt"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				gdb, db := opener.open(t, gormConfig(prepare))
				ctx := t.Context()
				gdb = gdb.WithContext(ctx)
				require.NoError(t, gdb.AutoMigrate(&gormProduct{}), "AutoMigrate")

				// Create, read, update, delete.
				p := gormProduct{Code: "A1", Price: 100}
				require.NoError(t, gdb.Create(&p).Error, "Create")
				require.NotZero(t, p.ID, "Create gave no id")
				require.NoError(t, gdb.Create(&[]gormProduct{{Code: "B2", Price: 5}, {Code: "C3", Price: 7}}).Error, "batch Create")
				var got gormProduct
				if assert.NoError(t, gdb.First(&got, "code = ?", "A1").Error, "First") {
					assert.Equal(t, p.ID, got.ID, "First")
					assert.Equal(t, 100, got.Price, "First")
				}
				assert.NoError(t, gdb.Model(&got).Update("price", 200).Error, "Update")
				var cheap []gormProduct
				require.NoError(t, gdb.Where("price < ?", 10).Order("code").Find(&cheap).Error, "Find")
				require.Len(t, cheap, 2, "Find")
				assert.Equal(t, "B2", cheap[0].Code, "Find")
				assert.NoError(t, gdb.Delete(&cheap[0]).Error, "Delete")
				var count int64
				assert.NoError(t, gdb.Model(&gormProduct{}).Count(&count).Error, "Count")
				assert.Equal(t, int64(2), count, "Count after soft delete")
				assert.ErrorIs(t, gdb.First(&got, "code = ?", "B2").Error, gorm.ErrRecordNotFound, "First of a deleted row")

				// Error translation: the driver's *pgconn.PgError must reach
				// GORM's dialect unwrapped.
				assert.ErrorIs(t, gdb.Create(&gormProduct{Code: "A1", Price: 1}).Error, gorm.ErrDuplicatedKey, "duplicate Create")
				assert.ErrorIs(t, gdb.Create(&gormProduct{Code: "NEG", Price: -1}).Error, gorm.ErrCheckConstraintViolated, "negative price")

				// Transactions: commit, rollback on error, nested savepoint.
				err := gdb.Transaction(func(tx *gorm.DB) error {
					if err := tx.Create(&gormProduct{Code: "T1", Price: 1}).Error; err != nil {
						return err
					}
					_ = tx.Transaction(func(tx2 *gorm.DB) error {
						tx2.Create(&gormProduct{Code: "T2-rolled-back", Price: 1})
						return errors.New("roll back the savepoint")
					})
					return nil
				})
				assert.NoError(t, err, "Transaction")
				boom := errors.New("boom")
				err = gdb.Transaction(func(tx *gorm.DB) error {
					tx.Create(&gormProduct{Code: "T3-rolled-back", Price: 1})
					return boom
				})
				assert.ErrorIs(t, err, boom, "the Transaction's own error")
				tx := gdb.Begin()
				tx.Create(&gormProduct{Code: "T4", Price: 1})
				assert.NoError(t, tx.Commit().Error, "Begin/Commit")
				var codes []string
				assert.NoError(t, gdb.Model(&gormProduct{}).Where("code LIKE ?", "T%").Order("code").Pluck("code", &codes).Error, "Pluck")
				assert.Equal(t, []string{"T1", "T4"}, codes, "committed codes")

				if prepare {
					pdb, ok := gdb.ConnPool.(*gorm.PreparedStmtDB)
					require.True(t, ok, "PrepareStmt mode runs on %T", gdb.ConnPool)
					assert.NotEmpty(t, pdb.Stmts.Keys(), "PrepareStmt mode prepared no statement")
				}
				assert.GreaterOrEqual(t, stats(t, db).Checkouts, uint64(15), "checkouts counted: is the tracker tracking GORM's calls?")
				pgxleak.VerifyNone(t, db)
			})
		}
	}
}

// TestGormLeakAttribution leaks through GORM (a transaction, a Rows, and a
// Rows in PrepareStmt mode) and checks that each is attributed to this
// file's line, not to GORM's callbacks.
func TestGormLeakAttribution(t *testing.T) {
	t.Parallel()
	for _, opener := range gormOpeners {
		t.Run(opener.name, func(t *testing.T) {
			t.Parallel()
			rec := &leaktest.Recorder{}
			gdb, db := opener.open(t, gormConfig(false), rec.Option(), pgxleak.WithLeakThreshold(50*time.Millisecond))
			require.NoError(t, gdb.AutoMigrate(&gormProduct{}))

			_, file, line, _ := runtime.Caller(0)
			tx := gdb.Begin() // leaked
			txLine := line + 1
			require.NoError(t, tx.Create(&gormProduct{Code: "X", Price: 1}).Error)
			_, _, line, _ = runtime.Caller(0)
			rows, err := gdb.Model(&gormProduct{}).Rows() // leaked
			rowsLine := line + 1
			require.NoError(t, err)
			_, _, line, _ = runtime.Caller(0)
			prows, err := gdb.Session(&gorm.Session{PrepareStmt: true}).Model(&gormProduct{}).Where("price > ?", 0).Rows() // leaked
			prowsLine := line + 1
			require.NoError(t, err)

			// Checkouts lists the oldest first, by the coarse clock:
			// checkouts made within one of its ticks come in any order.
			cos := checkouts(t, db)
			require.Len(t, cos, 3)
			var got, stacks []string
			for _, c := range cos {
				got = append(got, fmt.Sprintf("%s:%d", c.Culprit.File, c.Culprit.Line))
				stacks = append(stacks, stackString(c.Stack))
			}
			want := []string{fmt.Sprintf("%s:%d", file, txLine), fmt.Sprintf("%s:%d", file, rowsLine), fmt.Sprintf("%s:%d", file, prowsLine)}
			assert.ElementsMatch(t, want, got, "the checkouts' culprits\n%s", strings.Join(stacks, "\n"))
			if opener.tuned {
				l := rec.Wait(t, 10*time.Second, func(l pgxleak.Leak) bool {
					return l.Kind == pgxleak.LeakSuspected && l.TxStatus == "in transaction"
				})
				assert.Equal(t, fmt.Sprintf("%s:%d", file, txLine), fmt.Sprintf("%s:%d", l.Culprit.File, l.Culprit.Line), "the report's culprit")
			}

			_ = rows.Close()
			_ = prows.Close()
			require.NoError(t, tx.Rollback().Error)
			pgxleak.VerifyNone(t, db)
		})
	}
}
