package integration_test

import (
	"context"
	"errors"
	"testing"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/stretchr/testify/assert"
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
	_, err = db.Exec("UPDATE t SET a = 1")
	require.Same(t, sentinel, err, "Exec's error must be the driver's own error value")
	var x int
	require.NoError(t, db.QueryRow("SELECT x").Scan(&x))
	require.Equal(t, 5, x)
	tx, err := db.BeginTx(context.Background(), nil)
	require.NoError(t, err)
	require.NoError(t, tx.Rollback())
	require.NoError(t, mock.ExpectationsWereMet())
	st := stats(t, db)
	require.Equal(t, uint64(3), st.Checkouts, "checkouts tracked")
	require.Equal(t, uint64(3), st.Returns, "returns tracked")
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
	require.Error(t, tx.Rollback(), "Rollback succeeded")
	st := db.Stats()
	assert.Zero(t, st.OpenConnections, "the connection went back to the pool")
	assert.Zero(t, st.Idle, "the connection went back to the pool")
	pst := stats(t, db)
	assert.Equal(t, uint64(1), pst.Checkouts, "checkouts tracked")
	assert.Equal(t, uint64(1), pst.Returns, "returns tracked")
}
