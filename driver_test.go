package pgxleak_test

import (
	"database/sql"
	"testing"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

func TestRegisteredDriver(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	db, err := sql.Open("pgxleak", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := pgxleak.Stats(db); err != nil {
		t.Fatalf("Driver() = %T: %v", db.Driver(), err)
	}
	var n int
	if err := db.QueryRow("SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("query = %d, %v", n, err)
	}
	st := stats(t, db)
	if st.Checkouts != 1 || st.Returns != 1 || st.CheckedOut != 0 {
		t.Fatalf("tracker stats = %+v, want 1 checkout, 1 return", st)
	}
	pgxleak.VerifyNone(t, db)
}
