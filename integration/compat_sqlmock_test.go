package integration_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"fmt"
	"runtime"
	"testing"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
)

// sqlmockConnector hands out go-sqlmock's mock connection for dsn: the
// connector go-sqlmock does not export, in three lines.
type sqlmockConnector struct {
	drv driver.Driver
	dsn string
}

func (c sqlmockConnector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c sqlmockConnector) Driver() driver.Driver                        { return c.drv }

// newMockDB returns a tracked pool over a fresh go-sqlmock mock, opened with
// OpenDB, or with Open("sqlmock", dsn) when viaOpen is set.
func newMockDB(t *testing.T, viaOpen bool) (*sql.DB, sqlmock.Sqlmock) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	dsn := "pgxleak_mock_" + hex.EncodeToString(b[:])
	mockDB, mock, err := sqlmock.NewWithDSN(dsn)
	require.NoError(t, err)
	opts := []pgxleak.Option{pgxleak.WithMaxOpenConns(1), pgxleak.WithLogger(quiet)}
	var db *sql.DB
	if viaOpen {
		db, err = pgxleak.Open("sqlmock", dsn, opts...)
	} else {
		db, err = pgxleak.OpenDB(sqlmockConnector{drv: mockDB.Driver(), dsn: dsn}, opts...)
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = db.Close()     // sqlmock answers the driver's Close with "not expected"; that is fine here
		_ = mockDB.Close() // likewise
	})
	return db, mock
}

// tRecorder is what VerifyNone takes for a *testing.T: it records instead of failing.
type tRecorder struct{ errs []string }

func (r *tRecorder) Error(args ...any) { r.errs = append(r.errs, fmt.Sprint(args...)) }

// TestSqlmock gives a unit test with no database leak detection: the mock's
// expectations are met and VerifyNone passes when the code under test
// cleans up, and VerifyNone fails, naming the line, when it does not.
func TestSqlmock(t *testing.T) {
	t.Parallel()
	for _, viaOpen := range []bool{false, true} {
		name := "OpenDB(connector)"
		if viaOpen {
			name = `Open("sqlmock", dsn)`
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db, mock := newMockDB(t, viaOpen)
			ctx := t.Context()

			// Code under test that cleans up.
			mock.ExpectQuery(`SELECT name FROM users WHERE id = \$1`).WithArgs(7).
				WillReturnRows(sqlmock.NewRows([]string{"name"}).AddRow("ada"))
			mock.ExpectBegin()
			mock.ExpectExec(`UPDATE users SET name`).WithArgs("bob", 7).WillReturnResult(sqlmock.NewResult(0, 1))
			mock.ExpectCommit()
			var got string
			require.NoError(t, db.QueryRowContext(ctx, `SELECT name FROM users WHERE id = $1`, 7).Scan(&got))
			require.Equal(t, "ada", got)
			tx, err := db.BeginTx(ctx, nil)
			require.NoError(t, err)
			r, err := tx.ExecContext(ctx, `UPDATE users SET name = $1 WHERE id = $2`, "bob", 7)
			require.NoError(t, err)
			n, err := r.RowsAffected()
			require.NoError(t, err)
			require.Equal(t, int64(1), n, "rows affected")
			require.NoError(t, tx.Commit())
			require.NoError(t, mock.ExpectationsWereMet())
			var clean tRecorder
			pgxleak.VerifyNone(&clean, db, pgxleak.WithGracePeriod(0))
			require.Empty(t, clean.errs, "VerifyNone failed a clean test")
			st := stats(t, db)
			assert.Equal(t, uint64(2), st.Checkouts, "checkouts tracked")
			assert.Equal(t, uint64(2), st.Returns, "returns tracked")

			// Code under test that leaks its Rows.
			mock.ExpectQuery(`SELECT id FROM users`).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(1).AddRow(2))
			_, file, line, _ := runtime.Caller(0)
			rows, err := db.QueryContext(context.Background(), `SELECT id FROM users`) // the leak
			require.NoError(t, err)
			line++
			var leaky tRecorder
			pgxleak.VerifyNone(&leaky, db, pgxleak.WithGracePeriod(0))
			if assert.Len(t, leaky.errs, 1, "VerifyNone's reports") {
				assert.Contains(t, leaky.errs[0], fmt.Sprintf("compat_sqlmock_test.go:%d", line), "VerifyNone names the leak's line")
			}
			var lerr *pgxleak.LeakError
			require.ErrorAs(t, pgxleak.Find(db, pgxleak.WithGracePeriod(0)), &lerr)
			require.Len(t, lerr.Checkouts, 1)
			c := lerr.Checkouts[0].Culprit
			assert.Equal(t, fmt.Sprintf("%s:%d", file, line), fmt.Sprintf("%s:%d", c.File, c.Line), "Find's culprit")
			require.NoError(t, rows.Close())
			pgxleak.VerifyNone(t, db)
		})
	}
}

// TestSqlmockLeakedTransaction leaks a transaction on the mock: the tracker
// names its line, and it comes back when rolled back.
func TestSqlmockLeakedTransaction(t *testing.T) {
	t.Parallel()
	db, mock := newMockDB(t, false)
	mock.ExpectBegin()
	mock.ExpectRollback()
	_, file, line, _ := runtime.Caller(0)
	tx, err := db.Begin() // the leak
	require.NoError(t, err)
	line++
	cos := checkouts(t, db)
	require.Len(t, cos, 1)
	require.Equal(t, fmt.Sprintf("%s:%d", file, line), fmt.Sprintf("%s:%d", cos[0].Culprit.File, cos[0].Culprit.Line), "the leak's culprit")
	assert.Equal(t, "in transaction", cos[0].TxStatus)
	require.NoError(t, tx.Rollback())
	require.NoError(t, mock.ExpectationsWereMet())
	pgxleak.VerifyNone(t, db)
}
