package pgxleak_test

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

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
	st := stats(t, db)
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

	for _, absent := range []string{"db.client.connection.pending_requests", "db.client.connection.timeouts"} {
		if _, ok := m[absent]; ok {
			t.Errorf("%s is reported; database/sql cannot tell it honestly", absent)
		}
	}
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
	if v, _ := dp.Attributes.Value("db.client.connection.pool.name"); v.AsString() != pool || dp.Attributes.Len() != 1 {
		t.Errorf("%s attributes = %v, want only the pool name %q", name, dp.Attributes.ToSlice(), pool)
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

// TestMetricsFollowSetters: the limit metrics are the limits in force,
// read back from database/sql after db.Set… calls, not the ones given at
// Open.
func TestMetricsFollowSetters(t *testing.T) {
	o := newOTelTest(t)
	db, dsn := openTest(t, o.options(pgxleak.WithMaxOpenConns(6), pgxleak.WithMaxIdleConns(4), pgxleak.WithMinIdleConns(3))...)
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
	if _, ok := o.collect(t)["db.client.connection.max"]; ok {
		t.Error("db.client.connection.max reported for an unlimited pool")
	}
}
