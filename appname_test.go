package pgxleak_test

import (
	"testing"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestOpenApplicationName: the DSN's application_name wins.
func TestOpenApplicationName(t *testing.T) {
	dsn := pgtest.WithParams(pgtest.NewDatabase(t), map[string]string{"application_name": "mine"})
	db, err := pgxleak.Open("pgx", dsn, pgxleak.WithPoolName("p"), pgxleak.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var app string
	if err := db.QueryRowContext(t.Context(), "SELECT current_setting('application_name')").Scan(&app); err != nil {
		t.Fatal(err)
	}
	if app != "mine" {
		t.Errorf("application_name %q, want the DSN's", app)
	}
}
