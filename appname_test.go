package pgxleak_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestOpenApplicationName: the DSN's application_name wins.
func TestOpenApplicationName(t *testing.T) {
	dsn := pgtest.WithParams(pgtest.NewDatabase(t), map[string]string{"application_name": "mine"})
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithPoolName("p"), pgxleak.WithLogger(quiet))
	require.NoError(t, err)
	defer db.Close()
	var app string
	require.NoError(t, db.QueryRowContext(t.Context(), "SELECT current_setting('application_name')").Scan(&app))
	assert.Equal(t, "mine", app, "application_name: the DSN's")
}
