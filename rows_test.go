package pgxleak_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

func TestLeakRowsNeverClosedThresholdAndGC(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.Option())
	line := leakRows(t, db)
	rec.Wait(t, 5*time.Second, suspectedAt(line))
	pgtest.WaitFor(t, 10*time.Second, "a garbage-collection report", func() bool {
		runtime.GC()
		return rec.Has(func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakGarbageCollected && isCulprit(line)(l) })
	})
	st := stats(t, db)
	assert.EqualValues(t, 1, st.GarbageCollected, "the connection is counted once")
	assert.EqualValues(t, 1, st.CheckedOut, "the connection is lost for good")
	assert.Equal(t, 1, st.DBStats.InUse, "the connection is lost for good")
}

func TestLeakQueryRowNeverScanned(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.Option())
	line := leakQueryRow(db)
	rec.Wait(t, 5*time.Second, suspectedAt(line))
	assert.Len(t, checkouts(t, db), 1, "the unscanned row's connection")
}

// TestLeakRowsCancellableResolved: rows on a cancellable context are
// reported as suspected, then as resolved when database/sql closes them
// because the context ended.
func TestLeakRowsCancellableResolved(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.Option())
	ctx, cancel := context.WithCancel(context.Background())
	line := lineBelow()
	rows, err := db.QueryContext(ctx, "SELECT generate_series(1, 3)")
	require.NoError(t, err)
	defer rows.Close()
	rec.Wait(t, 5*time.Second, suspectedAt(line))
	cancel()
	r := rec.Wait(t, 5*time.Second, resolvedAt(line))
	require.GreaterOrEqual(t, r.Held, threshold, "held")
	pgxleak.VerifyNone(t, db)
}
