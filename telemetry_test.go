package pgxleak_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// otelTest is an in-memory OpenTelemetry setup: every span ends up in
// spans, every metric is read on demand through reader.
type otelTest struct {
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
	tracer trace.Tracer // for the test's own parent spans
}

func newOTelTest(t *testing.T) *otelTest {
	o := &otelTest{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	o.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(o.spans))
	o.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(o.reader))
	o.tracer = o.tp.Tracer("pgxleak_test")
	t.Cleanup(func() {
		_ = o.tp.Shutdown(context.Background())
		_ = o.mp.Shutdown(context.Background())
	})
	return o
}

func (o *otelTest) options(more ...pgxleak.Option) []pgxleak.Option {
	return append([]pgxleak.Option{pgxleak.WithTracerProvider(o.tp), pgxleak.WithMeterProvider(o.mp)}, more...)
}

// ended returns the ended spans with the given name.
func (o *otelTest) ended(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range o.spans.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// waitEnded polls until n spans with the given name have ended.
func (o *otelTest) waitEnded(t *testing.T, name string, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got := o.ended(name); len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d %q span(s); have %d", n, name, len(o.ended(name)))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// collect reads every metric, by name.
func (o *otelTest) collect(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := o.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collecting metrics: %v", err)
	}
	out := make(map[string]metricdata.Metrics)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

func attrs(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// poolName is the default pool name for dsn: host:port/database.
func poolName(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
}

// TestTracingLeakSpans leaks a connection in each of the ways the tracker
// reports, and checks that each leak produces exactly one span that starts
// at the checkout, ends at detection (or at the return, for a leak that
// resolved), names the culprit line and the connection's state, and links
// to the span that was active at the checkout.
func TestTracingLeakSpans(t *testing.T) {
	const stmt = "SELECT $1::int"
	tests := []struct {
		name      string
		threshold time.Duration
		// leak leaks a connection on ctx and returns the culprit site, the
		// report the span must match, and a func that ends the scenario.
		leak     func(t *testing.T, db *pgxleakDB, ctx context.Context) (site, pgxleak.Leak, func())
		kind     pgxleak.LeakKind
		resolved bool
		status   codes.Code
		// then runs after the span was checked, with that span.
		then func(t *testing.T, o *otelTest, first sdktrace.ReadOnlySpan, done func())
	}{
		{
			name:      "suspected, returned within the grace",
			threshold: 300 * time.Millisecond,
			leak: func(t *testing.T, db *pgxleakDB, ctx context.Context) (site, pgxleak.Leak, func()) {
				at := lineBelow()
				conn, err := db.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := conn.ExecContext(ctx, stmt, 1); err != nil {
					t.Fatal(err)
				}
				db.rec.wait(t, 10*time.Second, suspected)
				_ = conn.Close() // within one more threshold: the span ends here
				return at, db.rec.wait(t, 10*time.Second, resolved), func() {}
			},
			kind: pgxleak.LeakSuspected, resolved: true, status: codes.Ok,
		},
		{
			name:      "suspected, never returned",
			threshold: 50 * time.Millisecond,
			leak: func(t *testing.T, db *pgxleakDB, ctx context.Context) (site, pgxleak.Leak, func()) {
				at := lineBelow()
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tx.ExecContext(ctx, stmt, 1); err != nil {
					t.Fatal(err)
				}
				return at, db.rec.wait(t, 10*time.Second, suspected), func() { _ = tx.Rollback() }
			},
			kind: pgxleak.LeakSuspected, status: codes.Error,
			then: func(t *testing.T, o *otelTest, first sdktrace.ReadOnlySpan, done func()) {
				// Returned after its span was exported: a second span,
				// linked to the first, marks the resolution.
				done()
				spans := o.waitEnded(t, "pgxleak.connection.leak", 2)
				late := spans[1]
				if a := attrs(late.Attributes()); !a["pgxleak.leak.resolved"].AsBool() || late.Status().Code != codes.Ok {
					t.Errorf("late resolution span: resolved=%v status=%v", a["pgxleak.leak.resolved"], late.Status())
				}
				if !slices.ContainsFunc(late.Links(), func(l sdktrace.Link) bool { return l.SpanContext.Equal(first.SpanContext()) }) {
					t.Errorf("late resolution span does not link to the leak's span")
				}
			},
		},
		{
			name:      "garbage collected",
			threshold: time.Hour,
			leak: func(t *testing.T, db *pgxleakDB, ctx context.Context) (site, pgxleak.Leak, func()) {
				at := dropRows(t, db, ctx, stmt)
				deadline := time.Now().Add(10 * time.Second)
				for {
					runtime.GC()
					for _, l := range db.rec.all() {
						if l.Kind == pgxleak.LeakGarbageCollected {
							return at, l, func() {}
						}
					}
					if time.Now().After(deadline) {
						t.Fatal("the dropped Rows were never reported")
					}
					time.Sleep(5 * time.Millisecond)
				}
			},
			kind: pgxleak.LeakGarbageCollected, status: codes.Error,
		},
		{
			name:      "still out at Drain",
			threshold: time.Hour,
			leak: func(t *testing.T, db *pgxleakDB, ctx context.Context) (site, pgxleak.Leak, func()) {
				at := lineBelow()
				conn, err := db.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := conn.ExecContext(ctx, stmt, 1); err != nil {
					t.Fatal(err)
				}
				cancelled, cancel := context.WithCancel(ctx)
				cancel()
				var lerr *pgxleak.LeakError
				if err := pgxleak.Drain(cancelled, db.DB); !errors.As(err, &lerr) {
					t.Fatalf("Drain = %v, want a *LeakError", err)
				}
				return at, db.rec.wait(t, 10*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut }),
					func() { _ = conn.Close() }
			},
			kind: pgxleak.LeakStillOut, status: codes.Error,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newOTelTest(t)
			rec := newLeakRecorder()
			sqlDB, dsn := openTest(t, o.options(rec.option(), pgxleak.WithMaxOpenConns(2), pgxleak.WithLeakThreshold(tt.threshold))...)
			db := &pgxleakDB{DB: sqlDB, rec: rec}

			// The parent span's context has no Done channel, like a
			// request's context in a handler that uses
			// context.WithoutCancel, so that dropped Rows are watched.
			ctx, parent := o.tracer.Start(context.Background(), "request")
			at, l, done := tt.leak(t, db, ctx)
			parent.End()

			spans := o.waitEnded(t, "pgxleak.connection.leak", 1)
			if len(spans) != 1 {
				t.Fatalf("%d leak spans, want 1", len(spans))
			}
			s := spans[0]
			a := attrs(s.Attributes())
			checks := []struct {
				key  attribute.Key
				got  any
				want any
			}{
				{"db.system.name", a["db.system.name"].AsString(), "postgresql"},
				{"db.client.connection.pool.name", a["db.client.connection.pool.name"].AsString(), poolName(t, dsn)},
				{"pgxleak.leak.kind", a["pgxleak.leak.kind"].AsString(), tt.kind.String()},
				{"pgxleak.leak.resolved", a["pgxleak.leak.resolved"].AsBool(), tt.resolved},
				{"code.function.name", a["code.function.name"].AsString(), at.fn},
				{"code.file.path", a["code.file.path"].AsString(), at.file},
				{"code.line.number", a["code.line.number"].AsInt64(), int64(at.line)},
				{"pgxleak.connection.backend_pid", a["pgxleak.connection.backend_pid"].AsInt64(), int64(l.BackendPID)},
				{"pgxleak.connection.last_statement", a["pgxleak.connection.last_statement"].AsString(), stmt},
				{"pgxleak.connection.tx_status", a["pgxleak.connection.tx_status"].AsString(), l.TxStatus},
				{"pgxleak.connection.held_duration", a["pgxleak.connection.held_duration"].AsFloat64(), l.Held.Seconds()},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s = %v, want %v", c.key, c.got, c.want)
				}
			}
			if l.BackendPID == 0 {
				t.Error("the report has no backend PID")
			}
			if st := a["code.stacktrace"].AsString(); !strings.Contains(st, fmt.Sprintf("%s:%d", at.file, at.line)) {
				t.Errorf("code.stacktrace does not contain the culprit line %s:%d:\n%s", at.file, at.line, st)
			}
			if !s.StartTime().Equal(l.CheckedOutAt) {
				t.Errorf("span starts at %v, want the checkout at %v", s.StartTime(), l.CheckedOutAt)
			}
			if end := l.CheckedOutAt.Add(l.Held); !s.EndTime().Equal(end) {
				t.Errorf("span ends at %v, want %v (checkout + held %v)", s.EndTime(), end, l.Held)
			}
			if s.Status().Code != tt.status {
				t.Errorf("status = %v, want %v", s.Status(), tt.status)
			}
			if len(s.Links()) != 1 || !s.Links()[0].SpanContext.Equal(parent.SpanContext()) {
				t.Errorf("links = %v, want one to the parent span %v", s.Links(), parent.SpanContext())
			}
			if s.Parent().IsValid() {
				t.Errorf("leak span has a parent %v; it should be a root linked to the request", s.Parent())
			}
			if tt.then != nil {
				tt.then(t, o, s, done)
			} else {
				done()
			}
		})
	}
}

// pgxleakDB is a pool with its leak recorder.
type pgxleakDB struct {
	*sql.DB
	rec *leakRecorder
}

func suspected(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakSuspected && !l.Resolved }
func resolved(l pgxleak.Leak) bool  { return l.Kind == pgxleak.LeakSuspected && l.Resolved }

// dropRows runs a query and drops its Rows without closing them.
//
//go:noinline
func dropRows(t *testing.T, db *pgxleakDB, ctx context.Context, stmt string) site {
	at := lineBelow()
	rows, err := db.QueryContext(ctx, stmt, 1)
	if err != nil {
		t.Fatal(err)
	}
	_ = rows
	return at
}

// TestTracingHealthyPoolEmitsNoSpans runs a concurrent workload that never
// exceeds the pool and leaks nothing, with a short sampling interval, and
// checks that not a single span was started.
func TestTracingHealthyPoolEmitsNoSpans(t *testing.T) {
	o := newOTelTest(t)
	db, _ := openTest(t, o.options(
		pgxleak.WithMaxOpenConns(4),
		pgxleak.WithMinIdleConns(2),
		pgxleak.WithWaitSampleInterval(5*time.Millisecond),
		pgxleak.WithLeakThreshold(5*time.Second),
	)...)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for range 50 {
				var n int
				if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&n); err != nil {
					errs <- err
					return
				}
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					errs <- err
					return
				}
				if _, err := tx.ExecContext(ctx, "SELECT $1::int", n); err != nil {
					errs <- err
					return
				}
				if err := tx.Commit(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := db.Stats(); st.WaitCount != 0 {
		t.Fatalf("the workload waited %d times; it must stay within the pool", st.WaitCount)
	}
	if err := db.Close(); err != nil { // flushes whatever telemetry is pending
		t.Fatal(err)
	}
	if n := len(o.spans.Started()); n != 0 {
		t.Errorf("a healthy pool started %d spans, want 0: %v", n, o.spans.Ended())
	}
}

// TestMetricsPoolSignals drives a pool through checkouts, a wait and a leak
// and checks every metric pgxleak reports: names, units, the pool-name
// attribute (without the password in the DSN), and values that agree with
// db.Stats() and the tracker's counters.
func TestMetricsPoolSignals(t *testing.T) {
	o := newOTelTest(t)
	rec := newLeakRecorder()
	const secret = "s3cret-do-not-export"
	dsn := withPassword(t, pgtest.NewDatabase(t), secret)
	db, err := pgxleak.Open("pgx", dsn, o.options(
		rec.option(),
		pgxleak.WithLogger(nil),
		pgxleak.WithMaxOpenConns(2),
		pgxleak.WithMinIdleConns(1),
		pgxleak.WithLeakThreshold(100*time.Millisecond),
		pgxleak.WithWaitSampleInterval(10*time.Millisecond),
	)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	name := poolName(t, dsn)
	ctx := context.Background()

	for range 10 {
		if _, err := db.ExecContext(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	// A leak: held past the threshold.
	leaked, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 10*time.Second, suspected)
	m := o.collect(t)
	checkSum(t, m, "pgxleak.connection.suspected", "{connection}", name, nil, 1)
	checkSum(t, m, "pgxleak.connection.leaks", "{leak}", name, attribute.String("pgxleak.leak.kind", "suspected"), 1)

	// A wait: the other connection is held too, and one caller waits.
	held, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { _, err := db.ExecContext(ctx, "SELECT 1"); waited <- err }()
	pgtest.WaitFor(t, 10*time.Second, "a caller to wait", func() bool { return db.Stats().WaitCount == 1 })
	if err := held.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if err := leaked.Close(); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 10*time.Second, resolved)

	// wait_time appears at the sampler's next tick.
	var waitTime metricdata.HistogramDataPoint[float64]
	pgtest.WaitFor(t, 10*time.Second, "wait_time to record the wait", func() bool {
		h, ok := histogram(o.collect(t), "db.client.connection.wait_time")
		if ok && len(h.DataPoints) == 1 {
			waitTime = h.DataPoints[0]
		}
		return waitTime.Count == 1
	})
	if want := db.Stats().WaitDuration.Seconds(); math.Abs(waitTime.Sum-want) > 1e-9 {
		t.Errorf("wait_time sum = %v, want db.Stats().WaitDuration = %v", waitTime.Sum, want)
	}

	m = o.collect(t)
	st := pgxleak.Stats(db)
	checkSum(t, m, "db.client.connection.count", "{connection}", name, attribute.String("db.client.connection.state", "used"), int64(st.CheckedOut))
	checkSum(t, m, "db.client.connection.count", "{connection}", name, attribute.String("db.client.connection.state", "idle"), int64(st.Idle))
	checkSum(t, m, "db.client.connection.max", "{connection}", name, nil, 2)
	checkSum(t, m, "db.client.connection.idle.max", "{connection}", name, nil, 2)
	checkSum(t, m, "db.client.connection.idle.min", "{connection}", name, nil, 1)
	checkSum(t, m, "pgxleak.connection.suspected", "{connection}", name, nil, 0)
	checkSum(t, m, "pgxleak.connection.leaks", "{leak}", name, attribute.String("pgxleak.leak.kind", "suspected"), 1)
	if st.Idle+st.CheckedOut != st.OpenConnections || st.OpenConnections == 0 {
		t.Errorf("db.Stats() = %+v", st.DBStats)
	}

	use := checkHistogram(t, m, "db.client.connection.use_time", name)
	if use.Count != st.Returns {
		t.Errorf("use_time count = %d, want one per return: %d", use.Count, st.Returns)
	}
	if use.Sum < 0.1 || use.Sum > 60 { // the leak alone was held past 100ms
		t.Errorf("use_time sum = %vs, implausible", use.Sum)
	}
	create := checkHistogram(t, m, "db.client.connection.create_time", name)
	if create.Count < 2 || create.Sum <= 0 || create.Sum > 30 {
		t.Errorf("create_time count = %d, sum = %vs; want at least the 2 connections opened", create.Count, create.Sum)
	}
	checkHistogram(t, m, "db.client.connection.wait_time", name)

	// The wait is over: nobody waits, and it did not time out
	// (TestMetricsPendingTimeouts covers both).
	checkSum(t, m, "db.client.connection.pending_requests", "{request}", name, nil, 0)
	checkSum(t, m, "db.client.connection.timeouts", "{timeout}", name, nil, 0)
	if dump := fmt.Sprintf("%+v", m); strings.Contains(dump, secret) {
		t.Errorf("the metrics contain the DSN's password")
	}
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
	if !ok {
		t.Errorf("no metric %s", name)
		return
	}
	if md.Unit != unit {
		t.Errorf("%s unit = %q, want %q", name, md.Unit, unit)
	}
	sum, ok := md.Data.(metricdata.Sum[int64])
	if !ok {
		t.Errorf("%s is a %T, want an int64 sum", name, md.Data)
		return
	}
	for _, dp := range sum.DataPoints {
		if v, _ := dp.Attributes.Value("db.client.connection.pool.name"); v.AsString() != pool {
			t.Errorf("%s data point with pool name %q, want %q", name, v.AsString(), pool)
			continue
		}
		if kv, ok := extra.(attribute.KeyValue); ok {
			if v, _ := dp.Attributes.Value(kv.Key); v != kv.Value {
				continue
			}
		}
		if dp.Value != want {
			t.Errorf("%s%v = %d, want %d", name, dp.Attributes.ToSlice(), dp.Value, want)
		}
		return
	}
	t.Errorf("%s has no data point for %v: %+v", name, extra, sum.DataPoints)
}

func histogram(m map[string]metricdata.Metrics, name string) (metricdata.Histogram[float64], bool) {
	h, ok := m[name].Data.(metricdata.Histogram[float64])
	return h, ok
}

// checkHistogram checks a duration histogram's unit and pool attribute and
// returns its one data point.
func checkHistogram(t *testing.T, m map[string]metricdata.Metrics, name, pool string) metricdata.HistogramDataPoint[float64] {
	t.Helper()
	if u := m[name].Unit; u != "s" {
		t.Errorf("%s unit = %q, want s", name, u)
	}
	h, ok := histogram(m, name)
	if !ok || len(h.DataPoints) != 1 {
		t.Errorf("%s: %+v, want a histogram with one data point", name, m[name])
		return metricdata.HistogramDataPoint[float64]{}
	}
	dp := h.DataPoints[0]
	if v, _ := dp.Attributes.Value("db.client.connection.pool.name"); v.AsString() != pool || dp.Attributes.Len() != 3 {
		t.Errorf("%s attributes = %v, want the pool name %q, service.name and service.instance.id", name, dp.Attributes.ToSlice(), pool)
	}
	for _, k := range []attribute.Key{"service.name", "service.instance.id"} {
		if v, _ := dp.Attributes.Value(k); v.AsString() == "" {
			t.Errorf("%s has no %s", name, k)
		}
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
			if err != nil {
				t.Fatal(err)
			}
			_ = c.Close()
		})
	}
	plain, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	tracked, err := pgxleak.Open("pgx", dsn, pgxleak.WithMeterProvider(o.mp), pgxleak.WithLogger(nil),
		pgxleak.WithMaxOpenConns(1), pgxleak.WithWaitSampleInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	base, with := allocs(plain), allocs(tracked)
	t.Logf("allocations per checkout and return: %.0f with database/sql alone, %.0f through pgxleak with the SDK's meter", base, with)
	if with > base {
		t.Errorf("the return path allocates: %.0f allocations per checkout through pgxleak, %.0f without", with, base)
	}
	if h, ok := histogram(o.collect(t), "db.client.connection.use_time"); !ok || h.DataPoints[0].Count < 200 {
		t.Errorf("use_time did not record the checkouts: %+v", h)
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
				if err != nil {
					t.Fatal(err)
				}
				return db
			},
			want: poolName,
		},
		{
			name: "OpenDB over pgx, named by its first connection",
			open: func(t *testing.T, dsn string, opts ...pgxleak.Option) *sql.DB {
				cfg, err := pgx.ParseConfig(dsn)
				if err != nil {
					t.Fatal(err)
				}
				db, err := pgxleak.OpenDB(stdlib.GetConnector(*cfg), opts...)
				if err != nil {
					t.Fatal(err)
				}
				return db
			},
			want: poolName,
		},
		{
			name: "WithPoolName",
			open: func(t *testing.T, dsn string, opts ...pgxleak.Option) *sql.DB {
				db, err := pgxleak.Open("pgx", dsn, append(opts, pgxleak.WithPoolName("orders"))...)
				if err != nil {
					t.Fatal(err)
				}
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
			if _, err := db.ExecContext(context.Background(), "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			name := tt.want(t, dsn)
			m := o.collect(t)
			if create := checkHistogram(t, m, "db.client.connection.create_time", name); create.Count != 1 {
				t.Errorf("create_time count = %d, want 1", create.Count)
			}
			if use := checkHistogram(t, m, "db.client.connection.use_time", name); use.Count != 1 {
				t.Errorf("use_time count = %d, want 1", use.Count)
			}
			checkSum(t, m, "db.client.connection.count", "{connection}", name, attribute.String("db.client.connection.state", "idle"), 1)
			checkSum(t, m, "db.client.connection.max", "{connection}", name, nil, 1)
		})
	}
}

// TestTracingGlobalProvidersByDefault opens a pool with
// sql.Open("pgxleak", dsn), which takes no options, and checks that its
// spans and metrics go to the global providers, with the connection counts
// from the tracker and no limits (only the *sql.DB knows them).
func TestTracingGlobalProvidersByDefault(t *testing.T) {
	o := newOTelTest(t)
	otel.SetTracerProvider(o.tp)
	otel.SetMeterProvider(o.mp)
	t.Cleanup(func() {
		otel.SetTracerProvider(tracenoop.NewTracerProvider())
		otel.SetMeterProvider(noop.NewMeterProvider())
	})
	dsn := pgtest.NewDatabase(t)
	db, err := sql.Open(pgxleak.DriverName, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	name := poolName(t, dsn)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	m := o.collect(t)
	checkSum(t, m, "db.client.connection.count", "{connection}", name, attribute.String("db.client.connection.state", "used"), 1)
	checkSum(t, m, "db.client.connection.count", "{connection}", name, attribute.String("db.client.connection.state", "idle"), 0)
	for _, limit := range []string{"db.client.connection.max", "db.client.connection.idle.max", "db.client.connection.idle.min"} {
		if sum, ok := m[limit].Data.(metricdata.Sum[int64]); ok && slices.ContainsFunc(sum.DataPoints, func(dp metricdata.DataPoint[int64]) bool {
			v, _ := dp.Attributes.Value("db.client.connection.pool.name")
			return v.AsString() == name
		}) {
			t.Errorf("%s is reported for a pool whose *sql.DB pgxleak never saw", limit)
		}
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := pgxleak.Drain(cancelled, db); err == nil {
		t.Fatal("Drain = nil, want the connection still out")
	}
	var mine []sdktrace.ReadOnlySpan
	for _, s := range o.ended("pgxleak.connection.leak") {
		if attrs(s.Attributes())["db.client.connection.pool.name"].AsString() == name {
			mine = append(mine, s)
		}
	}
	if len(mine) != 1 || attrs(mine[0].Attributes())["pgxleak.leak.kind"].AsString() != "still_out" {
		t.Errorf("leak spans of this pool: %v, want one still_out span", mine)
	}
}
