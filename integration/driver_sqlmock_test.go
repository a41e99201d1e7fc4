package integration_test

import (
	"context"
	"errors"
	"testing"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
)

// Moved from the root package's driver_test.go with the go-sqlmock
// dependency: the wrapper's unit behaviour over a mock driver.

// TestSqlmockErrorsPassThrough uses go-sqlmock for the wrapper's unit
// behaviour: the driver's errors reach the caller as the same values.
func TestSqlmockErrorsPassThrough(t *testing.T) {
	sentinel := errors.New("mock failure")
	mdb, mock, err := sqlmock.NewWithDSN("sqlmock_errors_pass_through")
	require.NoError(t, err)
	defer mdb.Close()
	db, err := pgxleak.Open("sqlmock", "sqlmock_errors_pass_through", pgxleak.WithMaxOpenConns(1))
	require.NoError(t, err)
	defer db.Close()
	mock.ExpectExec("UPDATE t").WillReturnError(sentinel)
	mock.ExpectQuery("SELECT x").WillReturnRows(sqlmock.NewRows([]string{"x"}).AddRow(5))
	mock.ExpectBegin()
	mock.ExpectRollback()
	if _, err := db.Exec("UPDATE t SET a = 1"); err != sentinel {
		t.Fatalf("Exec error = %v, want the driver's own error value", err)
	}
	var x int
	if err := db.QueryRow("SELECT x").Scan(&x); err != nil || x != 5 {
		t.Fatalf("query = %d, %v", x, err)
	}
	tx, err := db.BeginTx(context.Background(), nil)
	require.NoError(t, err)
	require.NoError(t, tx.Rollback())
	require.NoError(t, mock.ExpectationsWereMet())
	st := pgxleak.Stats(db)
	if st.Checkouts != 3 || st.Returns != 3 {
		t.Fatalf("tracker saw %d checkouts, %d returns; want 3, 3", st.Checkouts, st.Returns)
	}
	pgxleak.VerifyNone(t, db)
}

// TestFailedRollbackDiscardsConnection: for a driver whose transaction
// state pgxleak cannot read, a failed Rollback leaves the session in an
// unknown state; the connection must not go back to the pool.
func TestFailedRollbackDiscardsConnection(t *testing.T) {
	mdb, mock, err := sqlmock.NewWithDSN("failed_rollback_discards")
	require.NoError(t, err)
	defer mdb.Close()
	db, err := pgxleak.Open("sqlmock", "failed_rollback_discards", pgxleak.WithLogger(nil))
	require.NoError(t, err)
	defer db.Close()
	mock.ExpectBegin()
	mock.ExpectRollback().WillReturnError(errors.New("connection lost during rollback"))
	mock.ExpectClose()
	tx, err := db.Begin()
	require.NoError(t, err)
	if err := tx.Rollback(); err == nil {
		t.Fatal("Rollback succeeded")
	}
	if st := db.Stats(); st.OpenConnections != 0 || st.Idle != 0 {
		t.Fatalf("the connection went back to the pool: %+v", st)
	}
	if st := pgxleak.Stats(db); st.Checkouts != 1 || st.Returns != 1 {
		t.Fatalf("tracker %+v", st)
	}
}
