package pgxleak_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// TestStmtRecordsStatement: a prepared statement's executions are operations
// of the connection that prepared it: its text is the checkout's last
// statement, and closing the statement does not return the connection.
func TestStmtRecordsStatement(t *testing.T) {
	db, err := pgxleak.OpenDB(&testdriver.Connector{}, pgxleak.WithLogger(quiet))
	require.NoError(t, err)
	defer db.Close()
	conn, err := db.Conn(t.Context())
	require.NoError(t, err)
	defer conn.Close()
	st, err := conn.PrepareContext(t.Context(), "SELECT 42")
	require.NoError(t, err)
	_, err = st.ExecContext(t.Context())
	require.NoError(t, err)
	require.NoError(t, st.Close())
	cs := checkouts(t, db)
	require.Len(t, cs, 1, "the connection is still out")
	assert.Equal(t, "SELECT 42", cs[0].LastStatement)
}
