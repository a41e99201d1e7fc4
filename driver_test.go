package pgxleak_test

import (
	"database/sql"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

func TestRegisteredDriver(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	db, err := sql.Open("pgxleak", dsn)
	require.NoError(t, err)
	defer db.Close()
	_, err = pgxleak.Stats(db)
	require.NoError(t, err, "Driver() = %T", db.Driver())
	var n int
	require.NoError(t, db.QueryRow("SELECT 41 + 1").Scan(&n))
	require.Equal(t, 42, n)
	st := stats(t, db)
	require.EqualValues(t, 1, st.Checkouts, "checkouts tracked")
	require.EqualValues(t, 1, st.Returns, "returns tracked")
	require.Zero(t, st.CheckedOut)
	pgxleak.VerifyNone(t, db)
}

// TestSQLOpenBadDSNIsLazy: sql.Open("pgxleak", dsn) keeps database/sql's
// contract: no error at Open, pgx's own error at the first use, with the
// password masked.
func TestSQLOpenBadDSNIsLazy(t *testing.T) {
	for _, tc := range badDSNs {
		t.Run(tc.name, func(t *testing.T) {
			db, err := sql.Open("pgxleak", tc.dsn)
			require.NoError(t, err)
			defer db.Close()
			err = db.PingContext(t.Context())
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.False(t, strings.HasPrefix(err.Error(), "pgxleak:"), "error %q: the driver's errors pass through", err)
			var pe *pgconn.ParseConfigError
			assert.ErrorAs(t, err, &pe)
			assertNoPassword(t, err)
		})
	}
}
