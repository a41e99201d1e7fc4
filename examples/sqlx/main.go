// Command sqlx shows sqlx on pgxleak: the two ways to get a *sqlx.DB, named
// queries, transactions, and a leaked Rows reported with this file's line.
//
//	go run ./examples/sqlx    # DATABASE_URL, or the local server
//
// It exits 0 when everything worked and the leak was attributed here.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	"github.com/jmoiron/sqlx"

	"github.com/pgxleak/pgxleak"
)

type user struct {
	ID    int            `db:"id"`
	Name  string         `db:"name"`
	Email sql.NullString `db:"email"`
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

	// 1. A pgxleak pool, handed to sqlx under the name "pgx": sqlx picks
	// $1 placeholders by driver name, and it knows "pgx".
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithMaxOpenConns(4), pgxleak.WithPoolName("example-sqlx"))
	if err != nil {
		return err
	}
	defer db.Close()
	dbx := sqlx.NewDb(db, "pgx")

	// 2. Or sqlx opens it by pgxleak's driver name: tell sqlx once that the
	// name uses $1 placeholders.
	sqlx.BindDriver("pgxleak", sqlx.DOLLAR)
	dbx2, err := sqlx.Connect("pgxleak", dsn)
	if err != nil {
		return err
	}
	defer dbx2.Close()
	fmt.Printf("Rebind for %q: %s; for %q: %s\n", dbx.DriverName(), dbx.Rebind("?, ?"), dbx2.DriverName(), dbx2.Rebind("?, ?"))

	table := fmt.Sprintf("pgxleak_example_sqlx_%d", os.Getpid())
	dbx.MustExecContext(ctx, `CREATE TABLE `+table+` (id int PRIMARY KEY, name text NOT NULL, email text)`)
	defer dbx.MustExecContext(ctx, `DROP TABLE `+table)

	if _, err := dbx.NamedExecContext(ctx, `INSERT INTO `+table+` (id, name, email) VALUES (:id, :name, :email)`,
		[]user{{1, "ada", sql.NullString{String: "ada@example.com", Valid: true}}, {2, "bob", sql.NullString{}}}); err != nil {
		return err
	}
	tx := dbx2.MustBeginTx(ctx, nil)
	if _, err := tx.NamedExecContext(ctx, `UPDATE `+table+` SET email = :email WHERE id = :id`,
		map[string]any{"id": 2, "email": "bob@example.com"}); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	var users []user
	if err := dbx.SelectContext(ctx, &users, dbx.Rebind(`SELECT * FROM `+table+` WHERE id >= ? ORDER BY id`), 1); err != nil {
		return err
	}
	for _, u := range users {
		fmt.Printf("user %d %s <%s>\n", u.ID, u.Name, u.Email.String)
	}

	// A leak: Rows that are never closed keep their connection out.
	rows, err := dbx.QueryxContext(ctx, `SELECT id FROM `+table)
	if err != nil {
		return err
	}
	defer rows.Close()              // for the error paths: an open Rows would block DROP TABLE
	out, _ := pgxleak.Checkouts(db) // db is a pgxleak pool: no error
	if len(out) != 1 || !strings.HasSuffix(out[0].Culprit.File, "examples/sqlx/main.go") {
		return fmt.Errorf("expected the leaked Rows to be reported at this file, got %v", out)
	}
	fmt.Println("pgxleak sees:", out[0])
	_ = rows.Close()
	if err := pgxleak.Find(db); err != nil {
		return err
	}
	fmt.Println("after rows.Close: no connection checked out")
	return nil
}
