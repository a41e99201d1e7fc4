// Command gorm shows GORM on pgxleak: the two ways to open, CRUD, a
// transaction, a duplicate key translated to gorm.ErrDuplicatedKey, and a
// leaked transaction reported with this file's line.
//
//	go run ./examples/gorm    # DATABASE_URL, or the local server
//
// It exits 0 when everything worked and the leak was attributed here.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"

	"github.com/pgxleak/pgxleak"
)

type product struct {
	ID    uint   `gorm:"primaryKey"`
	Code  string `gorm:"uniqueIndex;not null"`
	Price int
}

func main() {
	if err := run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	dsn := os.Getenv("DATABASE_URL")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	cfg := &gorm.Config{
		TranslateError: true, // duplicate keys become gorm.ErrDuplicatedKey
		Logger:         logger.Discard,
		NamingStrategy: schema.NamingStrategy{TablePrefix: fmt.Sprintf("pgxleak_example_gorm_%d_", os.Getpid())},
	}

	// 1. GORM over a pgxleak pool: pgxleak's tuning and leak detection,
	// GORM's API.
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithMaxOpenConns(4), pgxleak.WithPoolName("example-gorm"))
	if err != nil {
		return err
	}
	defer db.Close()
	gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: db}), cfg)
	if err != nil {
		return err
	}
	gdb = gdb.WithContext(ctx)

	// 2. Or GORM opens it by pgxleak's driver name (database/sql's pool
	// defaults; leak detection on).
	gdb2, err := gorm.Open(postgres.New(postgres.Config{DriverName: "pgxleak", DSN: dsn}), cfg)
	if err != nil {
		return err
	}
	sqlDB2, err := gdb2.DB()
	if err != nil {
		return err
	}
	defer sqlDB2.Close()

	if err := gdb.AutoMigrate(&product{}); err != nil {
		return err
	}
	defer gdb.Migrator().DropTable(&product{})

	if err := gdb.Create(&product{Code: "A1", Price: 100}).Error; err != nil {
		return err
	}
	if err := gdb2.Transaction(func(tx *gorm.DB) error {
		return tx.Create(&product{Code: "B2", Price: 5}).Error
	}); err != nil {
		return err
	}
	var ps []product
	if err := gdb.Order("code").Find(&ps).Error; err != nil {
		return err
	}
	fmt.Printf("products: %+v\n", ps)
	err = gdb.Create(&product{Code: "A1", Price: 1}).Error
	if !errors.Is(err, gorm.ErrDuplicatedKey) {
		return fmt.Errorf("duplicate key: got %v, want gorm.ErrDuplicatedKey", err)
	}
	fmt.Println("duplicate key translated:", errors.Is(err, gorm.ErrDuplicatedKey))

	// A leak: a transaction that is never committed or rolled back.
	tx := gdb.Begin()
	defer tx.Rollback() // for the error paths: an open transaction would block DROP TABLE
	tx.Model(&product{}).Where("code = ?", "A1").Update("price", 101)
	out, _ := pgxleak.Checkouts(db) // db is a pgxleak pool: no error
	if len(out) != 1 || !strings.HasSuffix(out[0].Culprit.File, "examples/gorm/main.go") {
		return fmt.Errorf("expected the leaked transaction to be reported at this file, got %v", out)
	}
	fmt.Printf("pgxleak sees: %s [%s, last statement %q]\n", out[0], out[0].TxStatus, out[0].LastStatement)
	tx.Rollback()
	if err := pgxleak.Find(db); err != nil {
		return err
	}
	fmt.Println("after Rollback: no connection checked out")
	return nil
}
