package integration_test

import (
	"database/sql"
	"errors"
	"runtime"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgxleak/pgxleak"
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
		if err != nil {
			t.Fatal(err)
		}
		return gdb, db
	}},
	{"DriverName: pgxleak", false, func(t *testing.T, cfg *gorm.Config, opts ...pgxleak.Option) (*gorm.DB, *sql.DB) {
		_, dsn := openTest(t)
		gdb, err := gorm.Open(postgres.New(postgres.Config{DriverName: "pgxleak", DSN: dsn}), cfg)
		if err != nil {
			t.Fatal(err)
		}
		db, err := gdb.DB()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		if _, err := pgxleak.Stats(db); err != nil {
			t.Fatalf("GORM's pool runs on %T, not pgxleak: %v", db.Driver(), err)
		}
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
				if err := gdb.AutoMigrate(&gormProduct{}); err != nil {
					t.Fatalf("AutoMigrate: %v", err)
				}

				// Create, read, update, delete.
				p := gormProduct{Code: "A1", Price: 100}
				if err := gdb.Create(&p).Error; err != nil || p.ID == 0 {
					t.Fatalf("Create: id %d, %v", p.ID, err)
				}
				if err := gdb.Create(&[]gormProduct{{Code: "B2", Price: 5}, {Code: "C3", Price: 7}}).Error; err != nil {
					t.Fatalf("batch Create: %v", err)
				}
				var got gormProduct
				if err := gdb.First(&got, "code = ?", "A1").Error; err != nil || got.ID != p.ID || got.Price != 100 {
					t.Errorf("First = %+v, %v", got, err)
				}
				if err := gdb.Model(&got).Update("price", 200).Error; err != nil {
					t.Errorf("Update: %v", err)
				}
				var cheap []gormProduct
				if err := gdb.Where("price < ?", 10).Order("code").Find(&cheap).Error; err != nil || len(cheap) != 2 || cheap[0].Code != "B2" {
					t.Errorf("Find = %+v, %v", cheap, err)
				}
				if err := gdb.Delete(&cheap[0]).Error; err != nil {
					t.Errorf("Delete: %v", err)
				}
				var count int64
				if err := gdb.Model(&gormProduct{}).Count(&count).Error; err != nil || count != 2 {
					t.Errorf("Count after soft delete = %d, %v; want 2", count, err)
				}
				if err := gdb.First(&got, "code = ?", "B2").Error; !errors.Is(err, gorm.ErrRecordNotFound) {
					t.Errorf("First of a deleted row = %v, want gorm.ErrRecordNotFound", err)
				}

				// Error translation: the driver's *pgconn.PgError must reach
				// GORM's dialect unwrapped.
				err := gdb.Create(&gormProduct{Code: "A1", Price: 1}).Error
				if !errors.Is(err, gorm.ErrDuplicatedKey) {
					t.Errorf("duplicate Create = %v, want gorm.ErrDuplicatedKey", err)
				}
				if err := gdb.Create(&gormProduct{Code: "NEG", Price: -1}).Error; !errors.Is(err, gorm.ErrCheckConstraintViolated) {
					t.Errorf("negative price = %v, want gorm.ErrCheckConstraintViolated", err)
				}

				// Transactions: commit, rollback on error, nested savepoint.
				if err := gdb.Transaction(func(tx *gorm.DB) error {
					if err := tx.Create(&gormProduct{Code: "T1", Price: 1}).Error; err != nil {
						return err
					}
					_ = tx.Transaction(func(tx2 *gorm.DB) error {
						tx2.Create(&gormProduct{Code: "T2-rolled-back", Price: 1})
						return errors.New("roll back the savepoint")
					})
					return nil
				}); err != nil {
					t.Errorf("Transaction: %v", err)
				}
				boom := errors.New("boom")
				if err := gdb.Transaction(func(tx *gorm.DB) error {
					tx.Create(&gormProduct{Code: "T3-rolled-back", Price: 1})
					return boom
				}); !errors.Is(err, boom) {
					t.Errorf("Transaction error = %v, want boom", err)
				}
				tx := gdb.Begin()
				tx.Create(&gormProduct{Code: "T4", Price: 1})
				if err := tx.Commit().Error; err != nil {
					t.Errorf("Begin/Commit: %v", err)
				}
				var codes []string
				if err := gdb.Model(&gormProduct{}).Where("code LIKE ?", "T%").Order("code").Pluck("code", &codes).Error; err != nil ||
					len(codes) != 2 || codes[0] != "T1" || codes[1] != "T4" {
					t.Errorf("committed codes = %v, %v; want [T1 T4]", codes, err)
				}

				if prepare {
					pdb, ok := gdb.ConnPool.(*gorm.PreparedStmtDB)
					if !ok {
						t.Fatalf("PrepareStmt mode runs on %T", gdb.ConnPool)
					}
					if n := len(pdb.Stmts.Keys()); n == 0 {
						t.Error("PrepareStmt mode prepared no statement")
					}
				}
				if st := stats(t, db); st.Checkouts < 15 {
					t.Errorf("the tracker counted %d checkouts; it is not tracking GORM's calls", st.Checkouts)
				}
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
			rec := newLeakRecorder()
			gdb, db := opener.open(t, gormConfig(false), rec.option(), pgxleak.WithLeakThreshold(50*time.Millisecond))
			if err := gdb.AutoMigrate(&gormProduct{}); err != nil {
				t.Fatal(err)
			}

			_, file, line, _ := runtime.Caller(0)
			tx := gdb.Begin() // leaked
			txLine := line + 1
			if err := tx.Create(&gormProduct{Code: "X", Price: 1}).Error; err != nil {
				t.Fatal(err)
			}
			_, _, line, _ = runtime.Caller(0)
			rows, err := gdb.Model(&gormProduct{}).Rows() // leaked
			rowsLine := line + 1
			if err != nil {
				t.Fatal(err)
			}
			_, _, line, _ = runtime.Caller(0)
			prows, err := gdb.Session(&gorm.Session{PrepareStmt: true}).Model(&gormProduct{}).Where("price > ?", 0).Rows() // leaked
			prowsLine := line + 1
			if err != nil {
				t.Fatal(err)
			}

			cos := checkouts(t, db)
			if len(cos) != 3 {
				t.Fatalf("%d checkouts, want 3", len(cos))
			}
			for i, want := range []int{txLine, rowsLine, prowsLine} {
				if c := cos[i].Culprit; c.File != file || c.Line != want {
					t.Errorf("checkout %d: culprit %s:%d, want %s:%d\n%s", i, c.File, c.Line, file, want, stackString(cos[i].Stack))
				}
			}
			if opener.tuned {
				l := rec.wait(t, 10*time.Second, func(l pgxleak.Leak) bool {
					return l.Kind == pgxleak.LeakSuspected && l.TxStatus == "in transaction"
				})
				if l.Culprit.File != file || l.Culprit.Line != txLine {
					t.Errorf("report culprit %s:%d, want %s:%d", l.Culprit.File, l.Culprit.Line, file, txLine)
				}
			}

			_ = rows.Close()
			_ = prows.Close()
			if err := tx.Rollback().Error; err != nil {
				t.Fatal(err)
			}
			pgxleak.VerifyNone(t, db)
		})
	}
}
