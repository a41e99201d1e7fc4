package pgxleak_test

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/oteltest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// otelTest is an in-memory OpenTelemetry setup (internal/oteltest): every
// span ends up in spans, every metric is read on demand by collect.
type otelTest struct {
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	mp     metric.MeterProvider // the SDK's, reading into collect
	sdk    *oteltest.SDK
	tracer trace.Tracer // for the test's own parent spans
}

func newOTelTest(t *testing.T) *otelTest {
	sdk := oteltest.New()
	o := &otelTest{spans: sdk.Spans, tp: sdk.TP, mp: sdk.MP, sdk: sdk}
	o.tracer = o.tp.Tracer("pgxleak_test")
	t.Cleanup(func() { sdk.Shutdown(context.Background()) })
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
			require.FailNowf(t, "timed out", "waiting for %d %q span(s); have %d", n, name, len(o.ended(name)))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// collect reads every metric, by name.
func (o *otelTest) collect(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	out, err := o.sdk.Collect(context.Background())
	require.NoError(t, err, "collecting metrics")
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
	require.NoError(t, err)
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
		kind     pgxleak.Kind
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
				require.NoError(t, err)
				_, err = conn.ExecContext(ctx, stmt, 1)
				require.NoError(t, err)
				db.rec.Wait(t, 10*time.Second, suspected)
				_ = conn.Close() // within one more threshold: the span ends here
				return at, db.rec.Wait(t, 10*time.Second, resolved), func() {}
			},
			kind: pgxleak.LeakSuspected, resolved: true, status: codes.Ok,
		},
		{
			name:      "suspected, never returned",
			threshold: 50 * time.Millisecond,
			leak: func(t *testing.T, db *pgxleakDB, ctx context.Context) (site, pgxleak.Leak, func()) {
				at := lineBelow()
				tx, err := db.BeginTx(ctx, nil)
				require.NoError(t, err)
				_, err = tx.ExecContext(ctx, stmt, 1)
				require.NoError(t, err)
				return at, db.rec.Wait(t, 10*time.Second, suspected), func() { _ = tx.Rollback() }
			},
			kind: pgxleak.LeakSuspected, status: codes.Error,
			then: func(t *testing.T, o *otelTest, first sdktrace.ReadOnlySpan, done func()) {
				// Returned after its span was exported: a second span,
				// linked to the first, marks the resolution.
				done()
				spans := o.waitEnded(t, "pgxleak.connection.leak", 2)
				late := spans[1]
				assert.True(t, attrs(late.Attributes())["pgxleak.leak.resolved"].AsBool(), "the late resolution span is resolved")
				assert.Equal(t, codes.Ok, late.Status().Code, "the late resolution span's status")
				assert.True(t, slices.ContainsFunc(late.Links(), func(l sdktrace.Link) bool { return l.SpanContext.Equal(first.SpanContext()) }),
					"the late resolution span links to the leak's span")
			},
		},
		{
			name:      "garbage collected",
			threshold: time.Hour,
			leak: func(t *testing.T, db *pgxleakDB, ctx context.Context) (site, pgxleak.Leak, func()) {
				at := dropRows(t, db, ctx, stmt)
				var gc pgxleak.Leak
				pgtest.WaitFor(t, 10*time.Second, "the dropped Rows to be reported", func() bool {
					runtime.GC()
					for _, l := range db.rec.All() {
						if l.Kind == pgxleak.LeakGarbageCollected {
							gc = l
							return true
						}
					}
					return false
				})
				return at, gc, func() {}
			},
			kind: pgxleak.LeakGarbageCollected, status: codes.Error,
		},
		{
			name:      "still out at Drain",
			threshold: time.Hour,
			leak: func(t *testing.T, db *pgxleakDB, ctx context.Context) (site, pgxleak.Leak, func()) {
				at := lineBelow()
				conn, err := db.Conn(ctx)
				require.NoError(t, err)
				_, err = conn.ExecContext(ctx, stmt, 1)
				require.NoError(t, err)
				cancelled, cancel := context.WithCancel(ctx)
				cancel()
				var lerr *pgxleak.LeakError
				require.ErrorAs(t, pgxleak.Drain(cancelled, db.DB), &lerr, "Drain")
				return at, db.rec.Wait(t, 10*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut }),
					func() { _ = conn.Close() }
			},
			kind: pgxleak.LeakStillOut, status: codes.Error,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newOTelTest(t)
			rec := &leaktest.Recorder{}
			sqlDB, dsn := openTest(t, o.options(rec.Option(), pgxleak.WithMaxOpenConns(2), pgxleak.WithLeakThreshold(tt.threshold))...)
			db := &pgxleakDB{DB: sqlDB, rec: rec}

			// The parent span's context has no Done channel, like a
			// request's context in a handler that uses
			// context.WithoutCancel, so that dropped Rows are watched.
			ctx, parent := o.tracer.Start(context.Background(), "request")
			at, l, done := tt.leak(t, db, ctx)
			parent.End()

			spans := o.waitEnded(t, "pgxleak.connection.leak", 1)
			require.Len(t, spans, 1, "leak spans")
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
				{"code.function.name", a["code.function.name"].AsString(), at.Func},
				{"code.file.path", a["code.file.path"].AsString(), at.File},
				{"code.line.number", a["code.line.number"].AsInt64(), int64(at.Line)},
				{"pgxleak.connection.backend_pid", a["pgxleak.connection.backend_pid"].AsInt64(), int64(l.BackendPID)},
				{"pgxleak.connection.last_statement", a["pgxleak.connection.last_statement"].AsString(), stmt},
				{"pgxleak.connection.tx_status", a["pgxleak.connection.tx_status"].AsString(), l.TxStatus},
				{"pgxleak.connection.held_duration", a["pgxleak.connection.held_duration"].AsFloat64(), l.Held.Seconds()},
			}
			for _, c := range checks {
				assert.Equal(t, c.want, c.got, string(c.key))
			}
			assert.NotZero(t, l.BackendPID, "the report has no backend PID")
			assert.Contains(t, a["code.stacktrace"].AsString(), fmt.Sprintf("%s:%d", at.File, at.Line), "code.stacktrace contains the culprit line")
			assert.True(t, s.StartTime().Equal(l.CheckedOutAt), "span starts at %v, want the checkout at %v", s.StartTime(), l.CheckedOutAt)
			assert.True(t, s.EndTime().Equal(l.CheckedOutAt.Add(l.Held)), "span ends at %v, want %v (checkout + held %v)", s.EndTime(), l.CheckedOutAt.Add(l.Held), l.Held)
			assert.Equal(t, tt.status, s.Status().Code, "the span's status: %v", s.Status())
			if assert.Len(t, s.Links(), 1, "links: one to the parent span") {
				assert.True(t, s.Links()[0].SpanContext.Equal(parent.SpanContext()), "links = %v, want one to the parent span %v", s.Links(), parent.SpanContext())
			}
			assert.False(t, s.Parent().IsValid(), "leak span has a parent %v; it should be a root linked to the request", s.Parent())
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
	rec *leaktest.Recorder
}

func suspected(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakSuspected }
func resolved(l pgxleak.Leak) bool  { return l.Kind == pgxleak.Resolved }

// dropRows runs a query and drops its Rows without closing them.
//
//go:noinline
func dropRows(t *testing.T, db *pgxleakDB, ctx context.Context, stmt string) site {
	at := lineBelow()
	rows, err := db.QueryContext(ctx, stmt, 1)
	require.NoError(t, err)
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
		require.NoError(t, err)
	}
	require.Zero(t, db.Stats().WaitCount, "the workload waited: it must stay within the pool")
	require.NoError(t, db.Close()) // flushes whatever telemetry is pending
	assert.Empty(t, o.spans.Started(), "a healthy pool started spans: %v", o.spans.Ended())
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
	db, err := sql.Open("pgxleak", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	name := poolName(t, dsn)
	ctx := context.Background()
	_, err = db.ExecContext(ctx, "SELECT 1")
	require.NoError(t, err)
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()

	m := o.collect(t)
	checkSum(t, m, "db.client.connection.count", "{connection}", name, attribute.String("db.client.connection.state", "used"), 1)
	checkSum(t, m, "db.client.connection.count", "{connection}", name, attribute.String("db.client.connection.state", "idle"), 0)
	for _, limit := range []string{"db.client.connection.max", "db.client.connection.idle.max", "db.client.connection.idle.min"} {
		if sum, ok := m[limit].Data.(metricdata.Sum[int64]); ok && slices.ContainsFunc(sum.DataPoints, func(dp metricdata.DataPoint[int64]) bool {
			v, _ := dp.Attributes.Value("db.client.connection.pool.name")
			return v.AsString() == name
		}) {
			assert.Fail(t, "a limit of an unseen pool", "%s is reported for a pool whose *sql.DB pgxleak never saw", limit)
		}
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	require.Error(t, pgxleak.Drain(cancelled, db), "Drain: the connection is still out")
	var mine []sdktrace.ReadOnlySpan
	for _, s := range o.ended("pgxleak.connection.leak") {
		if attrs(s.Attributes())["db.client.connection.pool.name"].AsString() == name {
			mine = append(mine, s)
		}
	}
	if assert.Len(t, mine, 1, "leak spans of this pool") {
		assert.Equal(t, "still_out", attrs(mine[0].Attributes())["pgxleak.leak.kind"].AsString(), "the pool's leak span")
	}
}
