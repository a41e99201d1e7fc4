package pgxleak_test

import (
	"testing"

	"github.com/pgxleak/pgxleak"
)

// TestStmtRecordsStatement: a prepared statement's executions are operations
// of the connection that prepared it: its text is the checkout's last
// statement, and closing the statement does not return the connection.
func TestStmtRecordsStatement(t *testing.T) {
	db, err := pgxleak.OpenDB(&fakeConnector{}, pgxleak.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := conn.PrepareContext(t.Context(), "SELECT 42")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ExecContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	cs := checkouts(t, db)
	if len(cs) != 1 || cs[0].LastStatement != "SELECT 42" {
		t.Fatalf("checkouts %+v: want the connection still out, last statement SELECT 42", cs)
	}
}
