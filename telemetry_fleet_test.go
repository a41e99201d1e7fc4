package pgxleak_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// sumValue returns the value of the int64 sum name's data point with the
// attribute kv (any point if kv is the zero value), and whether there is one.
func sumValue(m map[string]metricdata.Metrics, name string, kv attribute.KeyValue) (int64, bool) {
	sum, ok := m[name].Data.(metricdata.Sum[int64])
	if !ok {
		return 0, false
	}
	for _, dp := range sum.DataPoints {
		if kv.Key != "" {
			if v, _ := dp.Attributes.Value(kv.Key); v != kv.Value {
				continue
			}
		}
		return dp.Value, true
	}
	return 0, false
}

// TestMetricsPendingTimeouts: three callers wait for the one connection of
// a pool; pending_requests counts them. One gives up (its context ends):
// timeouts counts it, and only it. The other two are served when the
// connection comes back: pending_requests falls to 0 and timeouts stays 1.
func TestMetricsPendingTimeouts(t *testing.T) {
	o := newOTelTest(t)
	db, err := pgxleak.Open("pgx", pgtest.NewDatabase(t), o.options(
		pgxleak.WithLogger(nil),
		pgxleak.WithMaxOpenConns(1),
		pgxleak.WithWaitSampleInterval(20*time.Millisecond),
	)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	ctx := t.Context()
	held, err := db.Conn(ctx)
	require.NoError(t, err)

	pending := func() int64 {
		v, _ := sumValue(o.collect(t), "db.client.connection.pending_requests", attribute.KeyValue{})
		return v
	}
	timeouts := func() int64 {
		v, _ := sumValue(o.collect(t), "db.client.connection.timeouts", attribute.KeyValue{})
		return v
	}
	require.Zero(t, pending())

	served := make(chan error, 2)
	for range 2 {
		go func() { _, err := db.ExecContext(ctx, "SELECT 1"); served <- err }()
	}
	gaveUp := make(chan error, 1)
	giveUp, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _, err := db.ExecContext(giveUp, "SELECT 1"); gaveUp <- err }()

	pgtest.WaitFor(t, 10*time.Second, "pending_requests to count the three waiters", func() bool { return pending() == 3 })
	cancel()
	require.ErrorIs(t, <-gaveUp, context.Canceled)
	pgtest.WaitFor(t, 10*time.Second, "timeouts to count the caller that gave up", func() bool { return timeouts() == 1 })
	assert.Equal(t, int64(2), pending())

	require.NoError(t, held.Close())
	for range 2 {
		require.NoError(t, <-served)
	}
	pgtest.WaitFor(t, 10*time.Second, "pending_requests to fall to 0", func() bool { return pending() == 0 })
	// The served waiters are classified at the dumps after next (about
	// two seconds): they must never be counted.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); <-tick.C {
		require.Equal(t, int64(1), timeouts(), "a served waiter was counted as a timeout")
	}
}

// TestMetricsLeakSite: pgxleak.connection.leaks names the culprit's
// function, file and line, and, for a checkout made inside a span, its
// exemplar carries that span's trace.
func TestMetricsLeakSite(t *testing.T) {
	o := newOTelTest(t)
	rec := newLeakRecorder()
	db, err := pgxleak.Open("pgx", pgtest.NewDatabase(t), o.options(
		rec.option(),
		pgxleak.WithLogger(nil),
		pgxleak.WithLeakThreshold(50*time.Millisecond),
	)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })

	ctx, span := o.tracer.Start(t.Context(), "request")
	_, _, line, _ := runtime.Caller(0)
	conn, err := db.Conn(ctx) // the leak: line+1
	require.NoError(t, err)
	span.End()
	rec.wait(t, 10*time.Second, suspected)

	m := o.collect(t)
	sum, ok := m["pgxleak.connection.leaks"].Data.(metricdata.Sum[int64])
	require.True(t, ok)
	require.Len(t, sum.DataPoints, 1)
	dp := sum.DataPoints[0]
	get := func(k attribute.Key) attribute.Value { v, _ := dp.Attributes.Value(k); return v }
	assert.Equal(t, int64(line+1), get("code.line.number").AsInt64())
	assert.True(t, strings.HasSuffix(get("code.file.path").AsString(), "telemetry_fleet_test.go"), get("code.file.path").AsString())
	assert.True(t, strings.HasSuffix(get("code.function.name").AsString(), "TestMetricsLeakSite"), get("code.function.name").AsString())
	assert.Equal(t, "suspected", get("pgxleak.leak.kind").AsString())
	assert.NotEmpty(t, get("service.instance.id").AsString())
	require.Len(t, dp.Exemplars, 1, "the leak was made inside a sampled span")
	tid, sid := span.SpanContext().TraceID(), span.SpanContext().SpanID()
	assert.Equal(t, tid[:], dp.Exemplars[0].TraceID)
	assert.Equal(t, sid[:], dp.Exemplars[0].SpanID)
	require.NoError(t, conn.Close())
}
