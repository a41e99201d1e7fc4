package integration_test

import (
	"database/sql"
	"fmt"
	"runtime"
	"testing"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestLibpq runs lib/pq under pgxleak, opened by driver name and over its
// connector: queries, transactions, lib/pq's own error type passed through,
// and a leak attributed to this file's line.
func TestLibpq(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		open func(dsn string) (*sql.DB, error)
	}{
		{`Open("postgres", dsn)`, func(dsn string) (*sql.DB, error) {
			return pgxleak.Open("postgres", dsn, pgxleak.WithLogger(quiet))
		}},
		{"OpenDB(pq.NewConnector(dsn))", func(dsn string) (*sql.DB, error) {
			c, err := pq.NewConnector(dsn)
			if err != nil {
				return nil, err
			}
			return pgxleak.OpenDB(c, pgxleak.WithLogger(quiet))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db, err := tc.open(pgtest.NewDatabase(t))
			require.NoError(t, err)
			t.Cleanup(func() { _ = db.Close() })
			_, err = pgxleak.Stats(db)
			require.NoError(t, err, "the pool runs on %T, not pgxleak", db.Driver())
			libpqWorkload(t, db)

			_, file, line, _ := runtime.Caller(0)
			tx, err := db.Begin() // the leak
			require.NoError(t, err)
			line++
			cos := checkouts(t, db)
			require.Len(t, cos, 1)
			require.Equal(t, fmt.Sprintf("%s:%d", file, line), fmt.Sprintf("%s:%d", cos[0].Culprit.File, cos[0].Culprit.Line), "the leak's culprit")
			require.NoError(t, tx.Rollback())
			pgxleak.VerifyNone(t, db)
		})
	}
}

// TestLibpqThroughPgBouncer runs lib/pq through pgbouncer in transaction
// pooling mode with binary_parameters=yes, the DSN setting that makes lib/pq
// send a query with its parameters in one round trip.
func TestLibpqThroughPgBouncer(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	b := pgtest.NewPgBouncer(t, pgtest.PoolSize(1))
	db, err := pgxleak.Open("postgres", pgtest.WithParams(b.DSN(dsn), map[string]string{"binary_parameters": "yes"}),
		pgxleak.WithPgBouncer(), pgxleak.WithLogger(quiet), pgxleak.WithMaxOpenConns(3))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	libpqWorkload(t, db)
	pgxleak.VerifyNone(t, db)
}

func libpqWorkload(t *testing.T, db *sql.DB) {
	t.Helper()
	ctx := t.Context()
	compatExec(t, db, `CREATE TABLE kv (k text PRIMARY KEY, v int NOT NULL)`)
	for i, k := range []string{"a", "b", "c"} {
		_, err := db.ExecContext(ctx, `INSERT INTO kv VALUES ($1, $2)`, k, i)
		require.NoError(t, err)
	}
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = tx.ExecContext(ctx, `UPDATE kv SET v = v + $1`, 10)
	require.NoError(t, err)
	require.NoError(t, tx.Rollback())
	var sum int
	if assert.NoError(t, db.QueryRowContext(ctx, `SELECT sum(v) FROM kv WHERE k <> $1`, "z").Scan(&sum)) {
		assert.Equal(t, 3, sum, "the update was rolled back")
	}
	_, err = db.ExecContext(ctx, `INSERT INTO kv VALUES ($1, $2)`, "a", 1)
	var pqErr *pq.Error
	if assert.ErrorAs(t, err, &pqErr, "duplicate insert") {
		assert.EqualValues(t, "23505", pqErr.Code, "duplicate insert")
		assert.IsType(t, &pq.Error{}, err, "drivers' errors must pass through unwrapped")
	}
}
