//go:build go1.27

package pgxleak_test

import (
	"database/sql"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// TestRowsScanContextPassesThrough: the driver.ScanContext database/sql
// gives ScanColumn reaches the wrapped Rows unchanged. ConvertAssign
// needs the *sql.Rows it carries to make a cursor column (and a
// sql.RawBytes buffer); without it, it fails.
func TestRowsScanContextPassesThrough(t *testing.T) {
	db, err := pgxleak.OpenDB(&testdriver.Connector{Scanner: true}, pgxleak.WithLogger(quiet))
	require.NoError(t, err)
	defer db.Close()
	rows, err := db.Query(rowsQuery)
	require.NoError(t, err)
	defer rows.Close()
	require.True(t, rows.Next())
	var cursor sql.Rows
	require.NoError(t, rows.Scan(&cursor))
	require.True(t, cursor.Next())
	var n int64
	require.NoError(t, cursor.Scan(&n))
	assert.Equal(t, int64(1), n)
	require.NoError(t, cursor.Close())
	require.NoError(t, rows.Close())
	pgxleak.VerifyNone(t, db)
}
