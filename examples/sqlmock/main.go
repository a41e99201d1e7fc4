// Command sqlmock shows pgxleak's leak detection on top of go-sqlmock, for
// unit tests that have no database: the code under test runs against the
// mock, and pgxleak.Find (what VerifyNone calls) reports a connection left
// checked out, with the line that took it.
//
//	go run ./examples/sqlmock    # needs no database
//
// It exits 0 when the mock's expectations were met and the leak was
// attributed to this file.
package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log"
	"strings"

	"github.com/DATA-DOG/go-sqlmock"

	"github.com/pgxleak/pgxleak"
)

// mockConnector hands out go-sqlmock's mock connection for dsn, so that
// pgxleak.OpenDB can wrap it. (pgxleak.Open("sqlmock", dsn) works too.)
type mockConnector struct {
	drv driver.Driver
	dsn string
}

func (c mockConnector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c mockConnector) Driver() driver.Driver                        { return c.drv }

// userName is the code under test. It forgets to close its Rows when the
// user has no name, the kind of bug pgxleak exists to catch.
func userName(ctx context.Context, db *sql.DB, id int) (string, error) {
	rows, err := db.QueryContext(ctx, "SELECT name FROM users WHERE id = $1", id)
	if err != nil {
		return "", err
	}
	if !rows.Next() {
		rows.Close()
		return "", sql.ErrNoRows
	}
	var name sql.NullString
	if err := rows.Scan(&name); err != nil {
		rows.Close()
		return "", err
	}
	if !name.Valid {
		return "", errors.New("user has no name") // BUG: rows left open
	}
	return name.String, rows.Close()
}

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	const dsn = "pgxleak-example"
	mockDB, mock, err := sqlmock.NewWithDSN(dsn)
	if err != nil {
		return err
	}
	defer mockDB.Close()
	db, err := pgxleak.OpenDB(mockConnector{drv: mockDB.Driver(), dsn: dsn}, pgxleak.WithMaxOpenConns(1), pgxleak.WithLogger(nil))
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := context.Background()

	// The happy path: the Rows are closed, nothing is left out.
	mock.ExpectQuery(`SELECT name FROM users`).WithArgs(1).WillReturnRows(sqlmock.NewRows([]string{"name"}).AddRow("ada"))
	name, err := userName(ctx, db, 1)
	if err != nil {
		return err
	}
	if err := pgxleak.Find(db, pgxleak.WithGracePeriod(0)); err != nil {
		return fmt.Errorf("unexpected leak: %w", err)
	}
	fmt.Printf("user 1 is %s; no connection left checked out\n", name)

	// The bug: the mock returns a NULL name, and userName leaks its Rows.
	mock.ExpectQuery(`SELECT name FROM users`).WithArgs(2).WillReturnRows(sqlmock.NewRows([]string{"name"}).AddRow(nil))
	if _, err := userName(ctx, db, 2); err == nil {
		return errors.New("expected an error for a user with no name")
	}
	err = pgxleak.Find(db, pgxleak.WithGracePeriod(0))
	var leak *pgxleak.LeakError
	if !errors.As(err, &leak) || len(leak.Checkouts) != 1 || !strings.HasSuffix(leak.Checkouts[0].Culprit.File, "examples/sqlmock/main.go") {
		return fmt.Errorf("expected one leak in this file, got %v", err)
	}
	fmt.Println("pgxleak found the bug:", leak.Checkouts[0])
	if err := mock.ExpectationsWereMet(); err != nil {
		return err
	}
	return nil
}
