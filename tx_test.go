package pgxleak_test

import (
	"testing"
	"time"

	"github.com/pgxleak/pgxleak"
)

func TestLeakTxNeverEnded(t *testing.T) {
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.option())
	line := lineBelow()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	l := rec.wait(t, 5*time.Second, suspectedAt(line))
	if l.TxStatus != "in transaction" || l.LastStatement != "CREATE TABLE t (id int)" {
		t.Fatalf("tx status %q, last statement %q", l.TxStatus, l.LastStatement)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 5*time.Second, resolvedAt(line))
	pgxleak.VerifyNone(t, db)
}
