package pgxleak_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
)

func TestLeakTxNeverEnded(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.Option())
	line := lineBelow()
	tx, err := db.Begin()
	require.NoError(t, err)
	_, err = tx.Exec("CREATE TABLE t (id int)")
	require.NoError(t, err)
	l := rec.Wait(t, 5*time.Second, suspectedAt(line))
	require.Equal(t, "in transaction", l.TxStatus)
	require.Equal(t, "CREATE TABLE t (id int)", l.LastStatement)
	require.NoError(t, tx.Rollback())
	rec.Wait(t, 5*time.Second, resolvedAt(line))
	pgxleak.VerifyNone(t, db)
}
