package leaktest

import (
	"database/sql"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// Open opens a tracked pool on a fresh database of its own
// (pgtest.NewDatabase), and closes it when t ends; it returns the pool and
// the database's DSN. Reports go to a logger that drops them unless opts
// set one.
func Open(t testing.TB, opts ...pgxleak.Option) (*sql.DB, string) {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	opts = append([]pgxleak.Option{pgxleak.WithLogger(quiet)}, opts...)
	db, err := pgxleak.Open("pgx", dsn, opts...)
	require.NoError(t, err, "pgxleak.Open")
	t.Cleanup(func() { _ = db.Close() })
	return db, dsn
}

// quiet formats every record and drops it: unlike slog.DiscardHandler it
// is enabled, so the pools log as they would in production.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// LeakTx leaks a transaction as a goroutine that forgets one does: on a
// goroutine that then exits, it calls begin, runs stmt in the transaction
// begin returned, and returns that transaction, for the test to end.
// begin is the test's code that calls Begin (and notes its line), since
// the checkout's culprit must be the test's line: pgxleak never blames
// this package, which is under its own import path.
func LeakTx(t testing.TB, stmt string, begin func() (*sql.Tx, error)) *sql.Tx {
	t.Helper()
	got := make(chan *sql.Tx)
	go func() {
		tx, err := begin()
		if err == nil {
			_, err = tx.Exec(stmt)
		}
		assert.NoError(t, err) // not require: this is not the test's goroutine
		got <- tx
	}()
	tx := <-got
	require.NotNil(t, tx, "begin returned no transaction")
	return tx
}
