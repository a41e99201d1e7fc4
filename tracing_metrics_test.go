package pgxleak_test

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestMetricsPoolSignals drives a pool through checkouts, a wait and a leak
// and checks every metric pgxleak reports: names, units, the pool-name
// attribute (without the password in the DSN), and values that agree with
// db.Stats() and the tracker's counters.
func TestMetricsPoolSignals(t *testing.T) {
	o := newOTelTest(t)
	rec := &leaktest.Recorder{}
	const secret = "s3cret-do-not-export"
	dsn := withPassword(t, pgtest.NewDatabase(t), secret)
	db, err := pgxleak.Open("pgx", dsn, o.options(
		rec.Option(),
		pgxleak.WithLogger(nil),
		pgxleak.WithMaxOpenConns(2),
		pgxleak.WithMinIdleConns(1),
		pgxleak.WithLeakThreshold(100*time.Millisecond),
		pgxleak.WithWaitSampleInterval(10*time.Millisecond),
	)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	name := poolName(t, dsn)
	ctx := context.Background()

	for range 10 {
		_, err := db.ExecContext(ctx, "SELECT 1")
		require.NoError(t, err)
	}
	// A leak: held past the threshold.
	leaked, err := db.Conn(ctx)
	require.NoError(t, err)
	rec.Wait(t, 10*time.Second, suspected)
	m := o.collect(t)
	checkSum(t, m, "pgxleak.connection.suspected", "{connection}", name, nil, 1)
	checkSum(t, m, "pgxleak.connection.leaks", "{leak}", name, attribute.String("pgxleak.leak.kind", "suspected"), 1)

	// A wait: the other connection is held too, and one caller waits.
	held, err := db.Conn(ctx)
	require.NoError(t, err)
	waited := make(chan error, 1)
	go func() { _, err := db.ExecContext(ctx, "SELECT 1"); waited <- err }()
	pgtest.WaitFor(t, 10*time.Second, "a caller to wait", func() bool { return db.Stats().WaitCount == 1 })
	require.NoError(t, held.Close())
	require.NoError(t, <-waited)
	require.NoError(t, leaked.Close())
	rec.Wait(t, 10*time.Second, resolved)

	// wait_time appears at the sampler's next tick.
	var waitTime metricdata.HistogramDataPoint[float64]
	pgtest.WaitFor(t, 10*time.Second, "wait_time to record the wait", func() bool {
		h, ok := histogram(o.collect(t), "db.client.connection.wait_time")
		if ok && len(h.DataPoints) == 1 {
			waitTime = h.DataPoints[0]
		}
		return waitTime.Count == 1
	})
	assert.InDelta(t, db.Stats().WaitDuration.Seconds(), waitTime.Sum, 1e-9, "wait_time sum: db.Stats().WaitDuration")

	m = o.collect(t)
	st := stats(t, db)
	checkSum(t, m, "db.client.connection.count", "{connection}", name, attribute.String("db.client.connection.state", "used"), int64(st.CheckedOut))
	checkSum(t, m, "db.client.connection.count", "{connection}", name, attribute.String("db.client.connection.state", "idle"), int64(st.Idle))
	checkSum(t, m, "db.client.connection.max", "{connection}", name, nil, 2)
	checkSum(t, m, "db.client.connection.idle.max", "{connection}", name, nil, 2)
	checkSum(t, m, "db.client.connection.idle.min", "{connection}", name, nil, 1)
	checkSum(t, m, "pgxleak.connection.suspected", "{connection}", name, nil, 0)
	checkSum(t, m, "pgxleak.connection.leaks", "{leak}", name, attribute.String("pgxleak.leak.kind", "suspected"), 1)
	assert.Equal(t, st.OpenConnections, st.Idle+st.CheckedOut, "db.Stats() = %+v: idle and checked out make the open connections", st.DBStats)
	assert.NotZero(t, st.OpenConnections, "open connections")

	use := checkHistogram(t, m, "db.client.connection.use_time", name)
	assert.Equal(t, st.Returns, use.Count, "use_time count: one per return")
	assert.True(t, use.Sum >= 0.1 && use.Sum <= 60, "use_time sum = %vs, implausible", use.Sum) // the leak alone was held past 100ms
	create := checkHistogram(t, m, "db.client.connection.create_time", name)
	assert.GreaterOrEqual(t, create.Count, uint64(2), "create_time count: at least the 2 connections opened")
	assert.True(t, create.Sum > 0 && create.Sum <= 30, "create_time sum = %vs, implausible", create.Sum)
	checkHistogram(t, m, "db.client.connection.wait_time", name)

	// The wait is over: nobody waits, and it did not time out
	// (TestMetricsPendingTimeouts covers both).
	checkSum(t, m, "db.client.connection.pending_requests", "{request}", name, nil, 0)
	checkSum(t, m, "db.client.connection.timeouts", "{timeout}", name, nil, 0)
	assert.NotContains(t, fmt.Sprintf("%+v", m), secret, "the metrics contain the DSN's password")
}

// withPassword returns dsn with a password: the local server trusts its
// clients and ignores it, so it only serves to check it is never exported.
func withPassword(t *testing.T, dsn, password string) string {
	t.Helper()
	if cfg, err := pgx.ParseConfig(dsn); err != nil || cfg.Password != "" {
		t.Skipf("the test server needs a real password (%v)", err)
	}
	return pgtest.WithParams(dsn, map[string]string{"password": password})
}

// checkSum checks an int64 sum metric's unit and the value of its data
// point with the pool name and the extra attribute (if any).
func checkSum(t *testing.T, m map[string]metricdata.Metrics, name, unit, pool string, extra any, want int64) {
	t.Helper()
	md, ok := m[name]
	if !assert.True(t, ok, "no metric %s", name) {
		return
	}
	assert.Equal(t, unit, md.Unit, "%s's unit", name)
	sum, ok := md.Data.(metricdata.Sum[int64])
	if !assert.True(t, ok, "%s is a %T, want an int64 sum", name, md.Data) {
		return
	}
	for _, dp := range sum.DataPoints {
		if v, _ := dp.Attributes.Value("db.client.connection.pool.name"); !assert.Equal(t, pool, v.AsString(), "%s data point's pool name", name) {
			continue
		}
		if kv, ok := extra.(attribute.KeyValue); ok {
			if v, _ := dp.Attributes.Value(kv.Key); v != kv.Value {
				continue
			}
		}
		assert.Equal(t, want, dp.Value, "%s%v", name, dp.Attributes.ToSlice())
		return
	}
	assert.Fail(t, "no data point", "%s has no data point for %v: %+v", name, extra, sum.DataPoints)
}

func histogram(m map[string]metricdata.Metrics, name string) (metricdata.Histogram[float64], bool) {
	h, ok := m[name].Data.(metricdata.Histogram[float64])
	return h, ok
}

// checkHistogram checks a duration histogram's unit and pool attribute and
// returns its one data point.
func checkHistogram(t *testing.T, m map[string]metricdata.Metrics, name, pool string) metricdata.HistogramDataPoint[float64] {
	t.Helper()
	assert.Equal(t, "s", m[name].Unit, "%s's unit", name)
	h, ok := histogram(m, name)
	if !assert.True(t, ok && len(h.DataPoints) == 1, "%s: %+v, want a histogram with one data point", name, m[name]) {
		return metricdata.HistogramDataPoint[float64]{}
	}
	dp := h.DataPoints[0]
	v, _ := dp.Attributes.Value("db.client.connection.pool.name")
	assert.True(t, v.AsString() == pool && dp.Attributes.Len() == 3, "%s attributes = %v, want the pool name %q, service.name and service.instance.id", name, dp.Attributes.ToSlice(), pool)
	for _, k := range []attribute.Key{"service.name", "service.instance.id"} {
		v, _ := dp.Attributes.Value(k)
		assert.NotEmpty(t, v.AsString(), "%s has no %s", name, k)
	}
	return dp
}

// TestMetricsUseTimeAllocatesNothing checks that recording use_time on
// every return allocates nothing: with the SDK's meter, a checkout and
// return through pgxleak costs no more allocations than through plain
// database/sql over pgx.
func TestMetricsUseTimeAllocatesNothing(t *testing.T) {
	o := newOTelTest(t)
	dsn := pgtest.NewDatabase(t)
	allocs := func(db *sql.DB) float64 {
		t.Cleanup(func() { _ = db.Close() })
		db.SetMaxOpenConns(1)
		ctx := context.Background()
		return testing.AllocsPerRun(200, func() {
			c, err := db.Conn(ctx)
			require.NoError(t, err)
			_ = c.Close()
		})
	}
	plain, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	tracked, err := pgxleak.Open("pgx", dsn, pgxleak.WithMeterProvider(o.mp), pgxleak.WithLogger(nil),
		pgxleak.WithMaxOpenConns(1), pgxleak.WithWaitSampleInterval(time.Hour))
	require.NoError(t, err)
	base, with := allocs(plain), allocs(tracked)
	t.Logf("allocations per checkout and return: %.0f with database/sql alone, %.0f through pgxleak with the SDK's meter", base, with)
	assert.LessOrEqual(t, with, base, "allocations per checkout through pgxleak and without: the return path allocates")
	h, ok := histogram(o.collect(t), "db.client.connection.use_time")
	if assert.True(t, ok, "use_time did not record the checkouts") {
		assert.GreaterOrEqual(t, h.DataPoints[0].Count, uint64(200), "use_time did not record the checkouts")
	}
}

// TestMetricsPoolName checks the pool name every metric carries, for each
// way of opening a pool: host:port/database from the DSN or, for OpenDB,
// from the first connection, or the name given with WithPoolName. The
// first connection's create time is recorded under the final name.
func TestMetricsPoolName(t *testing.T) {
	tests := []struct {
		name string
		open func(t *testing.T, dsn string, opts ...pgxleak.Option) *sql.DB
		want func(t *testing.T, dsn string) string
	}{
		{
			name: "Open",
			open: func(t *testing.T, dsn string, opts ...pgxleak.Option) *sql.DB {
				db, err := pgxleak.Open("pgx", dsn, opts...)
				require.NoError(t, err)
				return db
			},
			want: poolName,
		},
		{
			name: "OpenDB over pgx, named by its first connection",
			open: func(t *testing.T, dsn string, opts ...pgxleak.Option) *sql.DB {
				cfg, err := pgx.ParseConfig(dsn)
				require.NoError(t, err)
				db, err := pgxleak.OpenDB(stdlib.GetConnector(*cfg), opts...)
				require.NoError(t, err)
				return db
			},
			want: poolName,
		},
		{
			name: "WithPoolName",
			open: func(t *testing.T, dsn string, opts ...pgxleak.Option) *sql.DB {
				db, err := pgxleak.Open("pgx", dsn, append(opts, pgxleak.WithPoolName("orders"))...)
				require.NoError(t, err)
				return db
			},
			want: func(*testing.T, string) string { return "orders" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newOTelTest(t)
			dsn := pgtest.NewDatabase(t)
			db := tt.open(t, dsn, pgxleak.WithMeterProvider(o.mp), pgxleak.WithLogger(nil), pgxleak.WithMaxOpenConns(1))
			t.Cleanup(func() { _ = db.Close() })
			_, err := db.ExecContext(context.Background(), "SELECT 1")
			require.NoError(t, err)
			name := tt.want(t, dsn)
			m := o.collect(t)
			assert.EqualValues(t, 1, checkHistogram(t, m, "db.client.connection.create_time", name).Count, "create_time count")
			assert.EqualValues(t, 1, checkHistogram(t, m, "db.client.connection.use_time", name).Count, "use_time count")
			checkSum(t, m, "db.client.connection.count", "{connection}", name, attribute.String("db.client.connection.state", "idle"), 1)
			checkSum(t, m, "db.client.connection.max", "{connection}", name, nil, 1)
		})
	}
}

// TestMetricsFollowSetters: the limit metrics are the limits in force,
// read back from database/sql after db.Set… calls, not the ones given at
// Open.
func TestMetricsFollowSetters(t *testing.T) {
	o := newOTelTest(t)
	db, dsn := openTest(t, o.options(pgxleak.WithMaxOpenConns(6), pgxleak.MaxIdleConnsForTest(4), pgxleak.WithMinIdleConns(3))...)
	name := poolName(t, dsn)
	var m map[string]metricdata.Metrics
	pgtest.WaitFor(t, 10*time.Second, "the monitor to report the limits", func() bool {
		m = o.collect(t)
		_, ok := m["db.client.connection.idle.max"]
		return ok
	})
	checkSum(t, m, "db.client.connection.max", "{connection}", name, nil, 6)
	checkSum(t, m, "db.client.connection.idle.max", "{connection}", name, nil, 4)
	checkSum(t, m, "db.client.connection.idle.min", "{connection}", name, nil, 3)

	db.SetMaxIdleConns(1)
	db.SetMaxOpenConns(5)
	m = o.collect(t)
	checkSum(t, m, "db.client.connection.max", "{connection}", name, nil, 5)
	checkSum(t, m, "db.client.connection.idle.max", "{connection}", name, nil, 1)
	checkSum(t, m, "db.client.connection.idle.min", "{connection}", name, nil, 1) // no more than database/sql keeps

	db.SetMaxOpenConns(0)
	assert.NotContains(t, o.collect(t), "db.client.connection.max", "reported for an unlimited pool")
}

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
	rec := &leaktest.Recorder{}
	db, err := pgxleak.Open("pgx", pgtest.NewDatabase(t), o.options(
		rec.Option(),
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
	rec.Wait(t, 10*time.Second, suspected)

	m := o.collect(t)
	sum, ok := m["pgxleak.connection.leaks"].Data.(metricdata.Sum[int64])
	require.True(t, ok)
	require.Len(t, sum.DataPoints, 1)
	dp := sum.DataPoints[0]
	get := func(k attribute.Key) attribute.Value { v, _ := dp.Attributes.Value(k); return v }
	assert.Equal(t, int64(line+1), get("code.line.number").AsInt64())
	assert.True(t, strings.HasSuffix(get("code.file.path").AsString(), "tracing_metrics_test.go"), get("code.file.path").AsString())
	assert.True(t, strings.HasSuffix(get("code.function.name").AsString(), "TestMetricsLeakSite"), get("code.function.name").AsString())
	assert.Equal(t, "suspected", get("pgxleak.leak.kind").AsString())
	assert.NotEmpty(t, get("service.instance.id").AsString())
	require.Len(t, dp.Exemplars, 1, "the leak was made inside a sampled span")
	tid, sid := span.SpanContext().TraceID(), span.SpanContext().SpanID()
	assert.Equal(t, tid[:], dp.Exemplars[0].TraceID)
	assert.Equal(t, sid[:], dp.Exemplars[0].SpanID)
	require.NoError(t, conn.Close())
}
