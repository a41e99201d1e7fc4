package pgxleak_test

import (
	"database/sql"
	"testing"

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
