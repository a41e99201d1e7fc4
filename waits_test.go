package pgxleak_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// TestTracingSlowWaitEpisode holds both connections of a pool of 2 with
// slow queries while 4 callers wait, and checks that one wait-episode span
// reports the 4 waits, their total and mean as database/sql measured them,
// the pool's limits, and both holders' culprit lines; and that a waiter's
// own span carries the estimate of its wait.
func TestTracingSlowWaitEpisode(t *testing.T) {
	o := newOTelTest(t)
	db, _ := openTest(t, o.options(
		pgxleak.WithMaxOpenConns(4),
		pgxleak.WithMinIdleConns(2),
		pgxleak.WithSlowWaitThreshold(50*time.Millisecond),
		pgxleak.WithWaitSampleInterval(10*time.Millisecond),
	)...)
	// The span gives the limits in force, not Open's.
	db.SetMaxOpenConns(2)
	db.SetMaxIdleConns(1)
	const hold = "SELECT pg_sleep(0.5)" // a slow holder
	ctx := context.Background()
	errs := make(chan error, 6)
	var wg sync.WaitGroup
	var sites [2]site
	var holderSpans [2]trace.SpanContext
	wg.Go(func() {
		ctx, span := o.tracer.Start(ctx, "holder 1")
		defer span.End()
		holderSpans[0] = span.SpanContext()
		sites[0] = lineBelow()
		_, err := db.ExecContext(ctx, hold)
		errs <- err
	})
	wg.Go(func() {
		ctx, span := o.tracer.Start(ctx, "holder 2")
		defer span.End()
		holderSpans[1] = span.SpanContext()
		sites[1] = lineBelow()
		_, err := db.ExecContext(ctx, hold)
		errs <- err
	})
	pgtest.WaitFor(t, 10*time.Second, "both holders to check out", func() bool { return db.Stats().InUse == 2 })
	for range 4 {
		wg.Go(func() {
			ctx, span := o.tracer.Start(ctx, "waiter")
			defer span.End()
			_, err := db.ExecContext(ctx, "SELECT 1")
			errs <- err
		})
	}
	pgtest.WaitFor(t, 10*time.Second, "4 callers to wait", func() bool { return db.Stats().WaitCount == 4 })
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	spans := o.waitEnded(t, "pgxleak.connection.wait", 1)
	st := db.Stats()
	require.Len(t, spans, 1, "wait-episode spans")
	s := spans[0]
	a := attrs(s.Attributes())
	total := a["pgxleak.wait.total_duration"].AsFloat64()
	assert.EqualValues(t, 4, a["pgxleak.wait.count"].AsInt64(), "pgxleak.wait.count")
	assert.InDelta(t, st.WaitDuration.Seconds(), total, 1e-9, "pgxleak.wait.total_duration: db.Stats().WaitDuration")
	mean := a["pgxleak.wait.mean_duration"].AsFloat64()
	assert.InDelta(t, total/4, mean, 1e-9, "pgxleak.wait.mean_duration: total/4")
	assert.True(t, mean >= 0.2 && mean <= 10, "pgxleak.wait.mean_duration = %v, want about 0.5s", mean)
	assert.GreaterOrEqual(t, a["pgxleak.wait.stalled_duration"].AsFloat64(), 0.05, "pgxleak.wait.stalled_duration: at least the threshold")
	for key, want := range map[attribute.Key]int64{
		"pgxleak.pool.max_open_connections": 2,
		"pgxleak.pool.max_idle_connections": 1,
		"pgxleak.pool.min_idle_connections": 1,
		"pgxleak.pool.peak_in_use":          2,
	} {
		assert.Equal(t, want, a[key].AsInt64(), string(key))
	}
	assert.Equal(t, "postgresql", a["db.system.name"].AsString(), "db.system.name")
	assert.NotEmpty(t, a["db.client.connection.pool.name"].AsString(), "db.client.connection.pool.name")
	assert.True(t, s.StartTime().Before(s.EndTime()), "episode span from %v to %v", s.StartTime(), s.EndTime())

	for i, at := range sites {
		found := slices.ContainsFunc(s.Events(), func(e sdktrace.Event) bool {
			ea := attrs(e.Attributes)
			return e.Name == "pgxleak.connection.holder" &&
				ea["code.file.path"].AsString() == at.File && ea["code.line.number"].AsInt64() == int64(at.Line) &&
				ea["code.function.name"].AsString() == at.Func &&
				ea["pgxleak.connection.held_duration"].AsFloat64() > 0.2 &&
				strings.Contains(ea["code.stacktrace"].AsString(), fmt.Sprintf("%s:%d", at.File, at.Line))
		})
		assert.True(t, found, "no holder event names holder %d at %s:%d; events: %v", i+1, at.File, at.Line, s.Events())
		assert.True(t, slices.ContainsFunc(s.Links(), func(l sdktrace.Link) bool { return l.SpanContext.Equal(holderSpans[i]) }),
			"the episode span does not link to holder %d's span", i+1)
	}

	// The waiters' own spans: a handoff in ResetSession attributes a wait.
	var estimates []float64
	for _, w := range o.ended("waiter") {
		for _, e := range w.Events() {
			if e.Name == "pgxleak.connection.wait" {
				estimates = append(estimates, attrs(e.Attributes)["pgxleak.wait.estimated_duration"].AsFloat64())
			}
		}
	}
	require.NotEmpty(t, estimates, "no waiter span has a pgxleak.connection.wait event")
	for _, e := range estimates {
		assert.True(t, e > 0 && e <= total, "estimated wait %v, want in (0, %v]", e, total)
	}
	assert.GreaterOrEqual(t, slices.Max(estimates), 0.2, "estimated waits %v, want one near the 0.5s hold", estimates)
	assert.Empty(t, o.ended("pgxleak.connection.leak"), "leak spans")
	t.Logf("episode: %d waits, total %.3fs, %d holder events, %d waiter estimates %v",
		a["pgxleak.wait.count"].AsInt64(), total, len(s.Events()), len(estimates), estimates)
}

// TestMetricsWaitTimeAtCollection: waits that have ended are in
// db.client.connection.wait_time at the very next collection, not only
// after the wait sampler's next tick (an hour away here), and the
// sampler's tick after that collection does not record them again.
func TestMetricsWaitTimeAtCollection(t *testing.T) {
	o := newOTelTest(t)
	db, err := pgxleak.OpenDB(&testdriver.Connector{}, o.options(
		pgxleak.WithPoolName("waits"),
		pgxleak.WithLogger(nil),
		pgxleak.WithMaxOpenConns(2),
		pgxleak.WithWaitSampleInterval(time.Hour),
	)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	ctx := context.Background()

	// 6 goroutines on 2 connections, each holding one for 40ms: about
	// 0.14s in all, and at least 4 of them wait.
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			c, err := db.Conn(ctx)
			if !assert.NoError(t, err) {
				return
			}
			assert.NoError(t, c.PingContext(ctx))
			time.Sleep(40 * time.Millisecond) // the work done while holding it
			_ = c.Close()
		})
	}
	wg.Wait()
	st := db.Stats()
	require.GreaterOrEqual(t, st.WaitCount, int64(4), "WaitCount: at least 4 of 6 callers wait for 2 connections")
	check := func(when string) {
		t.Helper()
		h, ok := histogram(o.collect(t), "db.client.connection.wait_time")
		require.True(t, ok, "%s: wait_time not collected", when)
		require.Len(t, h.DataPoints, 1, "%s: wait_time", when)
		dp := h.DataPoints[0]
		assert.Equal(t, st.WaitCount, int64(dp.Count), "%s: wait_time count: db.Stats().WaitCount", when)
		assert.InDelta(t, st.WaitDuration.Seconds(), dp.Sum, 1e-9, "%s: wait_time sum: db.Stats().WaitDuration", when)
	}
	check("first collection")
	check("second collection") // no double counting
}

// TestWaitsInProgress: database/sql adds a wait's time only when it ends,
// so three callers stuck behind the pool's only connection showed "0s" in
// all. Stats and Inspect count them while they wait, and the exhaustion
// warning gives the longest wait so far; the longest is a lower bound,
// never more than they have waited.
func TestWaitsInProgress(t *testing.T) {
	var logs lockedBuffer
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(1), pgxleak.WithWaitSampleInterval(50*time.Millisecond),
		pgxleak.WithSlowWaitThreshold(200*time.Millisecond), pgxleak.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held, err := db.Conn(ctx)
	require.NoError(t, err)
	start := time.Now()
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { _, _ = db.ExecContext(ctx, "SELECT 1") })
	}
	const atLeast = 600 * time.Millisecond
	st := statsUntil(t, db, "three waiters seen waiting 600ms", func(s pgxleak.PoolStats) bool {
		return s.Waiting == 3 && s.LongestWait >= atLeast
	})
	assert.EqualValues(t, 3, st.WaitCount)
	assert.Zero(t, st.WaitDuration, "no wait has ended")
	assert.LessOrEqual(t, st.LongestWait, time.Since(start), "the longest wait is a lower bound")

	in, err := pgxleak.Inspect(ctx, db)
	require.NoError(t, err)
	assert.Equal(t, 3, in.Stats.Waiting)
	assert.GreaterOrEqual(t, in.Stats.LongestWait, atLeast)
	require.Len(t, in.Waiters, 3)
	for _, w := range in.Waiters {
		assert.Positive(t, w.Waited, "waiter %d: how long it has waited", w.ID)
		assert.LessOrEqual(t, w.Waited, time.Since(start))
	}
	pgtest.WaitFor(t, 5*time.Second, "the exhaustion warning", func() bool { return strings.Contains(logs.String(), "pool exhausted for") })
	assert.Contains(t, logs.String(), "3 goroutines waiting (")
	assert.Contains(t, logs.String(), "), the longest for at least ")

	require.NoError(t, held.Close())
	wg.Wait()
	statsUntil(t, db, "no waiter left", func(s pgxleak.PoolStats) bool { return s.Waiting == 0 && s.LongestWait == 0 })
}

// statsUntil polls Stats until cond holds, failing t after 10 s.
func statsUntil(t *testing.T, db *sql.DB, msg string, cond func(pgxleak.PoolStats) bool) pgxleak.PoolStats {
	t.Helper()
	var st pgxleak.PoolStats
	pgtest.WaitFor(t, 10*time.Second, msg, func() bool {
		st = stats(t, db)
		return cond(st)
	})
	return st
}
