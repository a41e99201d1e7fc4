package pgxleak_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// verdictPool opens a pool for a verdict test: fast sampling, a short leak
// threshold, its log in a buffer, its metrics in o.
func verdictPool(t *testing.T, o *otelTest, dsn string, maxOpen int) (*sql.DB, *lockedBuffer) {
	t.Helper()
	var log lockedBuffer
	db, err := pgxleak.Open("pgx", dsn, o.options(
		pgxleak.WithLogger(slog.New(slog.NewTextHandler(&log, nil))),
		pgxleak.WithMaxOpenConns(maxOpen),
		pgxleak.WithLeakThreshold(300*time.Millisecond),
		pgxleak.WithWaitSampleInterval(50*time.Millisecond),
		pgxleak.WithSlowWaitThreshold(50*time.Millisecond),
	)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db, &log
}

// waitVerdict polls Inspect until the verdict is kind, and returns that
// inspection.
func waitVerdict(t *testing.T, db *sql.DB, kind string) pgxleak.Inspection {
	t.Helper()
	var v pgxleak.Inspection
	pgtest.WaitFor(t, 20*time.Second, "the verdict "+kind, func() bool {
		in, err := pgxleak.Inspect(t.Context(), db)
		require.NoError(t, err)
		v = in
		return v.Verdict == kind
	})
	return v
}

// verdictMetric returns the kind pgxleak.pool.verdict says is the pool's.
func verdictMetric(t *testing.T, o *otelTest) string {
	g, ok := o.collect(t)["pgxleak.pool.verdict"].Data.(metricdata.Gauge[int64])
	if !ok {
		return ""
	}
	for _, dp := range g.DataPoints {
		if dp.Value == 1 {
			v, _ := dp.Attributes.Value(attribute.Key("pgxleak.verdict"))
			return v.AsString()
		}
	}
	return ""
}

// TestVerdictHealthy: a pool whose callers never wait long is healthy,
// and says what its load needs.
func TestVerdictHealthy(t *testing.T) {
	o := newOTelTest(t)
	db, _ := verdictPool(t, o, pgtest.NewDatabase(t), 4)
	ctx := t.Context()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = db.ExecContext(ctx, "SELECT pg_sleep(0.005)")
		}
	}()
	defer func() { close(stop); <-done }()
	v := waitVerdict(t, db, "healthy")
	pgtest.WaitFor(t, 10*time.Second, "a load to be measured", func() bool {
		in, _ := pgxleak.Inspect(ctx, db)
		v = in
		return v.ConnectionsNeeded > 0
	})
	assert.Contains(t, v.VerdictReason, "the pool has 4")
	assert.Less(t, v.ConnectionsNeeded, 2.0)
	pgtest.WaitFor(t, 10*time.Second, "the metric to say healthy", func() bool { return verdictMetric(t, o) == "healthy" })
}

// TestVerdictLeaking: two transactions left open take the whole pool; the
// verdict names their line, in Inspect, the exhaustion warning and the
// metric.
func TestVerdictLeaking(t *testing.T) {
	o := newOTelTest(t)
	db, log := verdictPool(t, o, pgtest.NewDatabase(t), 2)
	ctx := t.Context()
	var line int
	for range 2 {
		_, _, line, _ = runtime.Caller(0)
		tx, err := db.BeginTx(ctx, nil) // the leak: line+1
		require.NoError(t, err)
		_, err = tx.ExecContext(ctx, "SELECT 1")
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback() })
	}
	// Once both are reported, a caller waits, so that the pool is
	// exhausted.
	pgtest.WaitFor(t, 10*time.Second, "both leaks to be reported", func() bool { return leaktest.Stats(t, db).Suspected == 2 })
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	go func() { _, _ = db.ExecContext(wctx, "SELECT 1") }()

	v := waitVerdict(t, db, "leaking")
	site := fmt.Sprintf("poolverdict_test.go:%d", line+1)
	assert.Contains(t, v.VerdictReason, "2 of 2 connections held by leaks at ")
	assert.Contains(t, v.VerdictReason, site)
	pgtest.WaitFor(t, 10*time.Second, "the exhaustion warning with the verdict", func() bool {
		// The reasoning ends the headline, which is cut to fit 300 bytes
		// when long (Inspection.VerdictReason above has it whole); the
		// verdict attribute always says which.
		out := log.String()
		return strings.Contains(out, "pgxleak: pool exhausted for") && strings.Contains(out, "verdict=leaking")
	})
	pgtest.WaitFor(t, 10*time.Second, "the metric to say leaking", func() bool { return verdictMetric(t, o) == "leaking" })
	cancel()
}

// TestVerdictUndersized: one connection for six workers that each hold it
// 50ms and give up after 100ms: callers wait and time out, and the
// verdict gives Little's law's numbers and the server's share.
func TestVerdictUndersized(t *testing.T) {
	o := newOTelTest(t)
	db, _ := verdictPool(t, o, pgtest.NewDatabase(t), 1)
	ctx := t.Context()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				qctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
				_, _ = db.ExecContext(qctx, "SELECT pg_sleep(0.05)")
				cancel()
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()

	var v pgxleak.Inspection
	pgtest.WaitFor(t, 20*time.Second, "the verdict undersized, with the load measured", func() bool {
		in, err := pgxleak.Inspect(ctx, db)
		require.NoError(t, err)
		v = in
		return v.Verdict == "undersized" && v.ConnectionsNeeded > 0
	})
	assert.Contains(t, v.VerdictReason, "by Little's law the load needs ≈")
	assert.Contains(t, v.VerdictReason, "the pool has 1")
	assert.Greater(t, v.ConnectionsNeeded, 1.5, v.VerdictReason)
	pgtest.WaitFor(t, 15*time.Second, "the server's share per instance", func() bool {
		in, _ := pgxleak.Inspect(ctx, db)
		v = in
		return v.PerInstance > 0
	})
	assert.Contains(t, v.VerdictReason, "per instance")
	assert.GreaterOrEqual(t, v.Instances, 1)
	pgtest.WaitFor(t, 10*time.Second, "the metric to say undersized", func() bool { return verdictMetric(t, o) == "undersized" })
}

// TestVerdictBlocked: the pool's connections wait for a row lock another
// session holds; the verdict names that session's PID.
func TestVerdictBlocked(t *testing.T) {
	o := newOTelTest(t)
	dsn := pgtest.NewDatabase(t)
	db, _ := verdictPool(t, o, dsn, 2)
	ctx := t.Context()
	_, err := db.ExecContext(ctx, "CREATE TABLE t (id int PRIMARY KEY, n int); INSERT INTO t VALUES (1, 0)")
	require.NoError(t, err)

	other, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close(context.Background()) })
	var pid uint32
	require.NoError(t, other.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid))
	_, err = other.Exec(ctx, "BEGIN; UPDATE t SET n = n + 1 WHERE id = 1")
	require.NoError(t, err)

	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range 3 { // two hold the pool's connections waiting on the lock; one waits for a connection
		wg.Go(func() { _, _ = db.ExecContext(wctx, "UPDATE t SET n = n + 1 WHERE id = 1") })
	}
	// The verdict may say blocked while the second UPDATE is still on its
	// way to the lock: wait until both connections wait on it.
	var v pgxleak.Inspection
	pgtest.WaitFor(t, 10*time.Second, "both connections blocked", func() bool {
		v = waitVerdict(t, db, "blocked")
		return strings.Contains(v.VerdictReason, "blocked on the server: 2 of 2 connections wait on locks held by")
	})
	assert.Contains(t, v.VerdictReason, fmt.Sprintf("PID %d (not this pool)", pid))
	pgtest.WaitFor(t, 10*time.Second, "the metric to say blocked", func() bool { return verdictMetric(t, o) == "blocked" })
	_, err = other.Exec(ctx, "ROLLBACK")
	require.NoError(t, err)
	wg.Wait()
}

// TestVerdictDeadlocked: a goroutine asks for a second connection while
// its Rows holds the pool's only one.
func TestVerdictDeadlocked(t *testing.T) {
	o := newOTelTest(t)
	db, _ := verdictPool(t, o, pgtest.NewDatabase(t), 1)
	ctx := t.Context()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		rows, err := db.QueryContext(ctx, "SELECT 1")
		if err != nil {
			errc <- err
			return
		}
		defer rows.Close()
		_, err = db.ExecContext(wctx, "SELECT 2") // waits for itself
		errc <- err
	}()
	v := waitVerdict(t, db, "deadlocked")
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	assert.Contains(t, v.VerdictReason, "1 goroutine waits for a connection while holding one of the same pool")
	assert.Contains(t, v.VerdictReason, "poolverdict_test.go:")
}
