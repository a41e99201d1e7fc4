package app

import (
	"fmt"
	"os"
	"testing"

	"github.com/pgxleak/pgxleak"
)

// TestReport prints Report's JSON on a line of its own, for the test
// binary of a module without a dot in its path.
func TestReport(t *testing.T) {
	db, err := pgxleak.Open("pgx", os.Getenv("DOTLESS_DSN"), pgxleak.WithMaxOpenConns(1), pgxleak.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out, err := Report(db)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("REPORT %s\n", out)
}
