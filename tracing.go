package pgxleak

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/dbconv"
	"go.opentelemetry.io/otel/trace"
)

// This file turns what the tracker sees into OpenTelemetry signals:
//
//   - a span per leak report (pgxleak.connection.leak),
//   - a span per episode of slow waits for a connection
//     (pgxleak.connection.wait), with one event per holder,
//   - an event on a waiter's own span when its wait can be attributed,
//   - the db.client.connection.* metrics of the semantic conventions, plus
//     pgxleak.connection.leaks and pgxleak.connection.suspected.
//
// Nothing here runs on the checkout path. The return path records one
// histogram value with a precomputed attribute set.

// DefaultSlowWaitThreshold is the wait time per sampling interval above
// which a wait episode is reported: 100ms of waiting per second (the default
// interval) means callers spent a tenth of their time queueing for a
// connection, or that one caller waited a tenth of a second.
const DefaultSlowWaitThreshold = 100 * time.Millisecond

// DefaultWaitSampleInterval is how often the pool's wait statistics are
// sampled.
const DefaultWaitSampleInterval = time.Second

// instrumentationName names pgxleak's tracer and meter.
const instrumentationName = "github.com/pgxleak/pgxleak"

// maxEpisodeIntervals bounds a wait-episode span, so that a pool that stays
// exhausted is reported while it is exhausted, not when it recovers: after
// this many sampling intervals the span ends and a linked one continues.
const maxEpisodeIntervals = 60

// maxHolderEvents bounds the holder events of one wait-episode span; the
// holders that held their connection longest are kept.
const maxHolderEvents = 64

// Span, event and attribute names of our own; the rest come from semconv.
const (
	leakSpanName    = "pgxleak.connection.leak"
	waitSpanName    = "pgxleak.connection.wait"
	holderEventName = "pgxleak.connection.holder"
	waitEventName   = "pgxleak.connection.wait"

	keyLeakKind      = attribute.Key("pgxleak.leak.kind")
	keyLeakResolved  = attribute.Key("pgxleak.leak.resolved")
	keyHeld          = attribute.Key("pgxleak.connection.held_duration") // seconds
	keyBackendPID    = attribute.Key("pgxleak.connection.backend_pid")
	keyStatement     = attribute.Key("pgxleak.connection.last_statement")
	keyTxStatus      = attribute.Key("pgxleak.connection.tx_status")
	keyWaitCount     = attribute.Key("pgxleak.wait.count")
	keyWaitTotal     = attribute.Key("pgxleak.wait.total_duration")   // seconds
	keyWaitMean      = attribute.Key("pgxleak.wait.mean_duration")    // seconds
	keyWaitStalled   = attribute.Key("pgxleak.wait.stalled_duration") // seconds
	keyWaitEstimate  = attribute.Key("pgxleak.wait.estimated_duration")
	keyWaitThreshold = attribute.Key("pgxleak.wait.threshold")       // seconds
	keyWaitInterval  = attribute.Key("pgxleak.wait.sample_interval") // seconds
	keyWaitTruncated = attribute.Key("pgxleak.wait.truncated")
	keyHolders       = attribute.Key("pgxleak.wait.holders")
	keyHoldersDrop   = attribute.Key("pgxleak.wait.holders_dropped")
	keyMaxOpen       = attribute.Key("pgxleak.pool.max_open_connections")
	keyMaxIdle       = attribute.Key("pgxleak.pool.max_idle_connections")
	keyMinIdle       = attribute.Key("pgxleak.pool.min_idle_connections")
	keyPeakInUse     = attribute.Key("pgxleak.pool.peak_in_use")
)

// durationBuckets are the histogram bucket boundaries, in seconds, for the
// create, wait and use times: from 100µs to 5 minutes. The SDK's default
// boundaries are made for milliseconds and would put nearly every value in
// the first bucket.
var durationBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
}

// WithTracerProvider sets where leak and slow-wait spans go. Default:
// otel.GetTracerProvider().
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tracerProvider = tp })
}

// WithMeterProvider sets where the db.client.connection.* metrics go.
// Default: otel.GetMeterProvider().
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.meterProvider = mp })
}

// WithSlowWaitThreshold reports a wait episode when goroutines waited for a
// connection for d or more within one sampling interval (their waits added
// up; a single wait that long counts too), or when callers have been
// waiting for d without any of them getting a connection. 0 turns wait
// spans and wait events off; the wait_time metric stays. Default:
// [DefaultSlowWaitThreshold].
func WithSlowWaitThreshold(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d < 0 {
			c.invalid("WithSlowWaitThreshold", d, "must not be negative")
			return
		}
		c.slowWaitThreshold, c.slowWaitSet = d, true
	})
}

// WithWaitSampleInterval sets how often the pool's wait statistics
// (db.Stats().WaitCount and WaitDuration) are sampled for the wait_time
// metric and for wait episodes. Default: [DefaultWaitSampleInterval].
func WithWaitSampleInterval(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d <= 0 {
			c.invalid("WithWaitSampleInterval", d, "must be positive")
			return
		}
		c.waitInterval = d
	})
}

// telemetry turns the tracker's events into OpenTelemetry spans and metrics.
type telemetry struct {
	p         *pool
	tracer    trace.Tracer
	threshold time.Duration // slow-wait threshold; 0 is off
	interval  time.Duration // wait sampling interval

	db    atomic.Pointer[sql.DB]    // set by startWaitSampling on the monitor goroutine
	attrs atomic.Pointer[poolAttrs] // set once the pool's name is known

	createTime metric.Float64Histogram
	waitTime   metric.Float64Histogram
	useTime    metric.Float64Histogram
	leaks      metric.Int64Counter
	count      metric.Int64ObservableUpDownCounter
	maxConns   metric.Int64ObservableUpDownCounter
	idleMax    metric.Int64ObservableUpDownCounter
	idleMin    metric.Int64ObservableUpDownCounter
	suspected  metric.Int64ObservableUpDownCounter
	callback   metric.Registration

	// Handoff attribution (see handoff). armed is set by the wait sampler
	// while callers wait, so that ResetSession costs one atomic load
	// otherwise.
	armed       atomic.Bool
	armedAt     atomic.Int64 // pool time when armed
	handoffWait atomic.Int64 // db.Stats().WaitDuration already attributed, in ns

	mu        sync.Mutex
	leakSpans map[*connState]*leakSpan
	closed    bool

	w waitState // the monitor goroutine's, and close's after the monitor stopped
}

// poolAttrs holds the measurement options for one pool name, built once so
// that recording a value allocates nothing.
type poolAttrs struct {
	name    string
	record  []metric.RecordOption
	observe []metric.ObserveOption
	idle    []metric.ObserveOption
	used    []metric.ObserveOption
}

func newPoolAttrs(name string) *poolAttrs {
	pn := semconv.DBClientConnectionPoolName(name)
	set := metric.WithAttributeSet(attribute.NewSet(pn))
	return &poolAttrs{
		name:    name,
		record:  []metric.RecordOption{set},
		observe: []metric.ObserveOption{set},
		idle:    []metric.ObserveOption{metric.WithAttributeSet(attribute.NewSet(pn, semconv.DBClientConnectionStateIdle))},
		used:    []metric.ObserveOption{metric.WithAttributeSet(attribute.NewSet(pn, semconv.DBClientConnectionStateUsed))},
	}
}

// leakSpan is the span of a suspected leak, kept open after detection so
// that it can end at the connection's return.
type leakSpan struct {
	checkoutAt int64 // identifies the checkout, with the connection
	span       trace.Span
	detectedAt time.Time
	open       bool
	timer      *time.Timer
}

func newTelemetry(p *pool) *telemetry {
	cfg := p.cfg
	t := &telemetry{
		p:         p,
		threshold: DefaultSlowWaitThreshold,
		interval:  cmp.Or(cfg.waitInterval, DefaultWaitSampleInterval),
		leakSpans: make(map[*connState]*leakSpan),
	}
	if cfg.slowWaitSet {
		t.threshold = cfg.slowWaitThreshold
	}
	if p.poolName != "" {
		t.attrs.Store(newPoolAttrs(p.poolName))
	}
	tp := cfg.tracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	t.tracer = tp.Tracer(instrumentationName, trace.WithSchemaURL(semconv.SchemaURL))
	mp := cfg.meterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if err := t.instruments(mp.Meter(instrumentationName, metric.WithSchemaURL(semconv.SchemaURL))); err != nil {
		otel.Handle(fmt.Errorf("pgxleak: creating metric instruments: %w", err))
	}
	return t
}

// instruments creates the metric instruments and registers the callback
// for the observed ones. An instrument the meter fails to create is a
// no-op, and the error is returned.
func (t *telemetry) instruments(m metric.Meter) error {
	buckets := metric.WithExplicitBucketBoundaries(durationBuckets...)
	createTime, err1 := dbconv.NewClientConnectionCreateTime(m, buckets)
	waitTime, err2 := dbconv.NewClientConnectionWaitTime(m, buckets)
	useTime, err3 := dbconv.NewClientConnectionUseTime(m, buckets)
	count, err4 := dbconv.NewClientConnectionCountObservable(m)
	maxConns, err5 := dbconv.NewClientConnectionMaxObservable(m)
	idleMax, err6 := dbconv.NewClientConnectionIdleMaxObservable(m)
	idleMin, err7 := dbconv.NewClientConnectionIdleMinObservable(m)
	t.createTime, t.waitTime, t.useTime = createTime.Inst(), waitTime.Inst(), useTime.Inst()
	t.count, t.maxConns, t.idleMax, t.idleMin = count.Inst(), maxConns.Inst(), idleMax.Inst(), idleMin.Inst()

	var err8, err9 error
	t.leaks, err8 = m.Int64Counter("pgxleak.connection.leaks",
		metric.WithUnit("{leak}"),
		metric.WithDescription("Connection leaks reported, by kind: suspected (held past the leak threshold), garbage_collected (Rows dropped without Close), still_out (out when the pool was drained or closed)."))
	t.suspected, err9 = m.Int64ObservableUpDownCounter("pgxleak.connection.suspected",
		metric.WithUnit("{connection}"),
		metric.WithDescription("Connections checked out now that were reported as leaks and have not come back."))
	if t.leaks == nil {
		t.leaks = noop.Int64Counter{}
	}
	if t.suspected == nil {
		t.suspected = noop.Int64ObservableUpDownCounter{}
	}
	err := errors.Join(err1, err2, err3, err4, err5, err6, err7, err8, err9)
	reg, rerr := m.RegisterCallback(t.observe, t.count, t.maxConns, t.idleMax, t.idleMin, t.suspected)
	t.callback = reg
	return errors.Join(err, rerr)
}

// poolAttrs returns the pool's measurement options, or nil while its name
// is not known yet: a pool opened with OpenDB without WithPoolName takes
// its name from its first pgx connection (and stays unnamed over another
// driver). It locks p.mu until the name is known, so it must not be called
// with p.mu or a connection's lock held.
func (t *telemetry) poolAttrs() *poolAttrs {
	if a := t.attrs.Load(); a != nil {
		return a
	}
	p := t.p
	p.mu.Lock()
	name, known := p.poolName, p.poolName != "" || len(p.conns) > 0
	p.mu.Unlock()
	if !known {
		return nil
	}
	t.attrs.CompareAndSwap(nil, newPoolAttrs(name))
	return t.attrs.Load()
}

func seconds(ns int64) float64 { return time.Duration(ns).Seconds() }

// observeCreate records how long a successful Connect took. Connect calls
// it after registering the connection, so the pool's name is known from
// then on.
func (p *pool) observeCreate(ns int64) {
	t := p.tel
	if a := t.poolAttrs(); a != nil {
		t.createTime.Record(context.Background(), seconds(ns), a.record...)
	}
}

// observeUse records how long a connection was out, at its return. It runs
// on the return path, under the connection's lock (and the pool's, when
// database/sql closes the connection), so it takes no lock: one atomic load
// and one histogram record with a precomputed attribute set, no
// allocation. The name is always known by then: every connection was
// created through observeCreate.
func (p *pool) observeUse(ns int64) {
	t := p.tel
	if a := t.attrs.Load(); a != nil {
		t.useTime.Record(context.Background(), seconds(ns), a.record...)
	}
}

// observe is the callback of the observed instruments. With the *sql.DB at
// hand (pools opened with Open or OpenDB) the counts and the maximum come
// from db.Stats(), the idle limits from the options pgxleak applied. For a
// pool opened with sql.Open("pgxleak", dsn), the counts come from the
// tracker and the limits, which only the *sql.DB knows, are not reported.
func (t *telemetry) observe(_ context.Context, o metric.Observer) error {
	a := t.poolAttrs()
	if a == nil {
		a = newPoolAttrs("")
	}
	var suspected int64
	var open, out int64
	t.p.each(func(c *connState) {
		open++
		if c.state == stateOut {
			out++
			if !c.internal && (c.suspected || c.gcLeaked) {
				suspected++
			}
		}
	})
	o.ObserveInt64(t.suspected, suspected, a.observe...)
	db := t.db.Load()
	if db == nil {
		o.ObserveInt64(t.count, out, a.used...)
		o.ObserveInt64(t.count, open-out, a.idle...)
		return nil
	}
	st := db.Stats()
	o.ObserveInt64(t.count, int64(st.InUse), a.used...)
	o.ObserveInt64(t.count, int64(st.Idle), a.idle...)
	if st.MaxOpenConnections > 0 {
		o.ObserveInt64(t.maxConns, int64(st.MaxOpenConnections), a.observe...)
	}
	o.ObserveInt64(t.idleMax, int64(t.p.cfg.maxIdle), a.observe...)
	o.ObserveInt64(t.idleMin, int64(t.p.cfg.minIdle), a.observe...)
	return nil
}

// leak turns a leak report into a span and counts it. It is called for
// every report, before de-duplication, on the monitor goroutine (or on
// Drain's or Close's).
//
// A suspected leak's span starts at the checkout and stays open after
// detection, with status Error, for one more leak threshold: if the
// connection comes back within that grace, the span ends at the return,
// with status Ok and pgxleak.leak.resolved=true. Otherwise the span ends
// with its end time set to the detection time, still Error, so that it is
// exported without waiting for a return that may never come; a return after
// that gets a second, short span linked to the first. Garbage-collected and
// still-out leaks never resolve: their spans end at detection.
func (t *telemetry) leak(l Leak, s snapshot) {
	if !l.Resolved {
		t.leaks.Add(context.Background(), 1, metric.WithAttributes(
			semconv.DBClientConnectionPoolName(l.Pool), keyLeakKind.String(l.Kind.String())))
	}
	detectedAt := l.CheckedOutAt.Add(l.Held) // for a resolved report, the return

	t.mu.Lock()
	defer t.mu.Unlock()
	prev := t.leakSpans[s.conn]
	if prev != nil && prev.checkoutAt != s.checkoutAt {
		t.endUnresolved(prev) // an earlier checkout of this connection
		delete(t.leakSpans, s.conn)
		prev = nil
	}
	if l.Resolved {
		delete(t.leakSpans, s.conn)
		if prev != nil && prev.open {
			prev.timer.Stop()
			prev.span.SetAttributes(keyLeakResolved.Bool(true), keyHeld.Float64(l.Held.Seconds()))
			prev.span.AddEvent("pgxleak.leak.resolved", trace.WithTimestamp(detectedAt))
			prev.span.SetStatus(codes.Ok, "")
			prev.span.End(trace.WithTimestamp(detectedAt))
			return
		}
		span := t.startLeakSpan(l, s, prev)
		span.SetStatus(codes.Ok, "")
		span.End(trace.WithTimestamp(detectedAt))
		return
	}
	if prev != nil {
		t.endUnresolved(prev) // suspected before, now garbage-collected or still out
	}
	span := t.startLeakSpan(l, s, prev)
	span.SetStatus(codes.Error, l.String())
	if l.Kind != LeakSuspected || t.closed || t.p.cfg.leakThreshold <= 0 {
		delete(t.leakSpans, s.conn)
		span.End(trace.WithTimestamp(detectedAt))
		return
	}
	span.AddEvent("pgxleak.leak.detected", trace.WithTimestamp(detectedAt))
	ls := &leakSpan{checkoutAt: s.checkoutAt, span: span, detectedAt: detectedAt, open: true}
	conn := s.conn
	ls.timer = time.AfterFunc(t.p.cfg.leakThreshold, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.leakSpans[conn] == ls {
			t.endUnresolved(ls) // kept in the map, for the link from a late return
		}
	})
	t.leakSpans[s.conn] = ls
}

// endUnresolved ends an open leak span at its detection time. t.mu is held.
func (t *telemetry) endUnresolved(ls *leakSpan) {
	if !ls.open {
		return
	}
	ls.open = false
	ls.timer.Stop()
	ls.span.End(trace.WithTimestamp(ls.detectedAt))
}

// startLeakSpan starts a leak span at the checkout, linked to the span that
// was active in the checkout's context and, for a late resolution, to the
// leak's earlier span.
func (t *telemetry) startLeakSpan(l Leak, s snapshot, earlier *leakSpan) trace.Span {
	var links []trace.Link
	if s.ctx != nil {
		if sc := trace.SpanContextFromContext(s.ctx); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	if earlier != nil {
		links = append(links, trace.Link{SpanContext: earlier.span.SpanContext()})
	}
	attrs := append([]attribute.KeyValue{
		semconv.DBSystemNamePostgreSQL,
		semconv.DBClientConnectionPoolName(l.Pool),
		keyLeakKind.String(l.Kind.String()),
		keyLeakResolved.Bool(l.Resolved),
	}, checkoutAttrs(l.Checkout)...)
	_, span := t.tracer.Start(context.Background(), leakSpanName,
		trace.WithTimestamp(l.CheckedOutAt),
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithLinks(links...),
		trace.WithAttributes(attrs...))
	return span
}

// checkoutAttrs describes a checkout: where it was made and what the
// connection was doing.
func checkoutAttrs(c Checkout) []attribute.KeyValue {
	kv := []attribute.KeyValue{
		keyHeld.Float64(c.Held.Seconds()),
		keyTxStatus.String(c.TxStatus),
	}
	if c.Culprit != (Frame{}) {
		kv = append(kv,
			semconv.CodeFunctionName(c.Culprit.Function),
			semconv.CodeFilePath(c.Culprit.File),
			semconv.CodeLineNumber(c.Culprit.Line))
	}
	if len(c.Stack) > 0 {
		kv = append(kv, semconv.CodeStacktrace(c.StackString()))
	}
	if c.BackendPID != 0 {
		kv = append(kv, keyBackendPID.Int64(int64(c.BackendPID)))
	}
	if c.LastStatement != "" {
		kv = append(kv, keyStatement.String(c.LastStatement))
	}
	return kv
}

// waitState is the wait sampler's state.
type waitState struct {
	lastCount    int64
	lastDuration time.Duration
	lastTick     time.Time
	pendingWaits int64         // waits counted but not yet recorded in wait_time
	pendingTime  time.Duration // wait time not yet recorded in wait_time
	stallSince   time.Time     // since when callers wait and none got a connection; zero if not stalled
	episode      *episode
	previous     trace.SpanContext // the truncated episode a new one continues
}

// episode is a run of sampling intervals in which callers waited.
type episode struct {
	start, end time.Time
	waits      int64
	total      time.Duration
	stalled    time.Duration
	peakInUse  int
	maxOpen    int
	slow       bool
	holders    map[holderKey]holder
}

type holderKey struct {
	c          *connState
	checkoutAt int64
}

type holder struct {
	snap snapshot
	seen time.Time
}

// startWaitSampling is called once by the monitor goroutine when it
// starts, for a pool opened with Open or OpenDB. It takes the first sample;
// the monitor then calls sampleWaitStats every interval.
func (t *telemetry) startWaitSampling() {
	db := t.p.db // written before the monitor started
	t.db.Store(db)
	st := db.Stats()
	t.w.lastCount, t.w.lastDuration, t.w.lastTick = st.WaitCount, st.WaitDuration, time.Now()
}

// sampleWaitStats runs every sampling interval on the monitor goroutine. It
// reads db.Stats() once and works on the deltas of WaitCount, which
// database/sql increments when a wait starts, and WaitDuration, to which it
// adds a wait's length when the wait ends (cancelled waits included).
func (t *telemetry) sampleWaitStats() {
	db := t.db.Load()
	if db == nil {
		return
	}
	now := time.Now()
	st := db.Stats()
	w := &t.w
	dCount := st.WaitCount - w.lastCount
	dTime := st.WaitDuration - w.lastDuration
	intervalStart := w.lastTick
	w.lastCount, w.lastDuration, w.lastTick = st.WaitCount, st.WaitDuration, now
	t.recordWaitTime(dCount, dTime)

	// While no wait has ended since waits were counted, every one of them
	// is still waiting: the oldest has waited at least since then.
	switch {
	case dTime > 0:
		w.stallSince = time.Time{}
	case dCount > 0 && w.stallSince.IsZero():
		w.stallSince = now
	}
	var stalled time.Duration
	if !w.stallSince.IsZero() {
		stalled = now.Sub(w.stallSince)
	}
	waiting := dCount > 0 || !w.stallSince.IsZero() // callers may be waiting now
	saturated := st.MaxOpenConnections > 0 && st.InUse >= st.MaxOpenConnections
	t.arm(waiting || saturated, st)
	if t.threshold <= 0 {
		return
	}
	// An episode lasts while callers wait or waits end, and while the pool
	// stays saturated after them (more waiters may be queued).
	if !waiting && dTime == 0 && (w.episode == nil || !saturated) {
		t.endEpisode(false)
		return
	}
	ep := w.episode
	if ep == nil {
		ep = &episode{start: intervalStart, holders: make(map[holderKey]holder)}
		w.episode = ep
	}
	ep.end = now
	ep.waits += dCount
	ep.total += dTime
	ep.stalled = max(ep.stalled, stalled)
	ep.peakInUse = max(ep.peakInUse, st.InUse)
	ep.maxOpen = st.MaxOpenConnections
	if dTime >= t.threshold || stalled >= t.threshold {
		ep.slow = true
	}
	if waiting || saturated {
		for _, s := range t.p.outSnapshots() {
			ep.holders[holderKey{s.conn, s.checkoutAt}] = holder{snap: s, seen: now}
		}
	}
	if now.Sub(ep.start) >= maxEpisodeIntervals*t.interval {
		t.endEpisode(true)
		w.episode = &episode{start: now, holders: make(map[holderKey]holder)}
	}
}

// recordWaitTime records wait_time from the Stats deltas. database/sql
// gives no individual waits, only their count and their sum, and it counts
// a wait when it starts but adds its length when it ends. So each counted
// wait is recorded once, with the mean of the wait time accumulated until
// then: the histogram's count and sum are exact (sum: once the waits have
// ended), its distribution is one of interval means. Waits counted while no
// wait time has arrived yet, and wait time arriving with no new waits
// counted, are carried to the next interval that has both.
func (t *telemetry) recordWaitTime(dCount int64, dTime time.Duration) {
	w := &t.w
	w.pendingWaits += dCount
	w.pendingTime += dTime
	if w.pendingWaits == 0 || w.pendingTime == 0 {
		return
	}
	n, mean := w.pendingWaits, w.pendingTime.Seconds()/float64(w.pendingWaits)
	w.pendingWaits, w.pendingTime = 0, 0
	a := t.poolAttrs()
	if a == nil || !t.waitTime.Enabled(context.Background()) {
		return
	}
	for range n {
		t.waitTime.Record(context.Background(), mean, a.record...)
	}
}

// arm turns handoff attribution on while callers wait or the pool is
// saturated, and off otherwise. When it turns on, the wait time so far is
// taken as already attributed.
func (t *telemetry) arm(on bool, st sql.DBStats) {
	on = on && t.threshold > 0
	if on && !t.armed.Load() {
		t.handoffWait.Store(int64(st.WaitDuration))
		t.armedAt.Store(t.p.now())
	}
	t.armed.Store(on)
}

// handoff is called by ResetSession, on the goroutine of the caller that
// checks out a connection, with its context. When a wait has just ended,
// that caller is usually the waiter that was handed a returned connection,
// and its wait is the growth of db.Stats().WaitDuration since the last
// handoff: it is added as an event to the caller's span.
//
// It costs one atomic load unless the wait sampler saw callers waiting (or
// the pool saturated) in its last interval. Then it reads db.Stats() (one
// db.mu acquisition) on every ResetSession, span or not, so that each
// caller's estimate starts where the previous one ended.
//
// The estimate is exact when one wait ended since the previous
// ResetSession. It over-estimates when several did: waiters woken together
// (the first to look gets their sum, the others nothing), cancelled waits,
// and connections the background opener handed to waiters (they make no
// ResetSession call). It is capped at the time since the sampler armed
// attribution plus one interval, which bounds any wait it could cover.
func (t *telemetry) handoff(ctx context.Context) {
	if !t.armed.Load() {
		return
	}
	// Only a recording span can carry the event: don't take db.mu (in
	// Stats) on every checkout of a saturated pool for nothing.
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	db := t.db.Load()
	if db == nil {
		return
	}
	total := int64(db.Stats().WaitDuration)
	prev := t.handoffWait.Load()
	if total <= prev || !t.handoffWait.CompareAndSwap(prev, total) {
		return
	}
	estimate := min(total-prev, t.p.now()-t.armedAt.Load()+int64(t.interval))
	name := ""
	if a := t.attrs.Load(); a != nil {
		name = a.name
	}
	span.AddEvent(waitEventName, trace.WithAttributes(
		semconv.DBClientConnectionPoolName(name),
		keyWaitEstimate.Float64(seconds(estimate))))
}

// endEpisode ends the current wait episode and, if it was slow, emits its
// span. truncated says the episode goes on in a new span.
func (t *telemetry) endEpisode(truncated bool) {
	w := &t.w
	ep := w.episode
	w.episode = nil
	if ep == nil {
		return
	}
	if !ep.slow {
		w.previous = trace.SpanContext{}
		return
	}
	sc := t.emitEpisode(ep, truncated, w.previous)
	w.previous = trace.SpanContext{}
	if truncated {
		w.previous = sc
	}
}

// emitEpisode emits the span of a slow wait episode: what was measured,
// the pool's limits, and one event per holder, longest held first, each
// also linked to the span active at its checkout.
func (t *telemetry) emitEpisode(ep *episode, truncated bool, continues trace.SpanContext) trace.SpanContext {
	holders := make([]holder, 0, len(ep.holders))
	for _, h := range ep.holders {
		holders = append(holders, h)
	}
	slices.SortFunc(holders, func(a, b holder) int {
		return cmp.Or(cmp.Compare(b.snap.held, a.snap.held), cmp.Compare(a.snap.checkoutAt, b.snap.checkoutAt))
	})
	dropped := 0
	if len(holders) > maxHolderEvents {
		dropped = len(holders) - maxHolderEvents
		holders = holders[:maxHolderEvents]
	}
	p := t.p
	attrs := []attribute.KeyValue{
		semconv.DBSystemNamePostgreSQL,
		semconv.DBClientConnectionPoolName(p.name()),
		keyWaitCount.Int64(ep.waits),
		keyWaitTotal.Float64(ep.total.Seconds()),
		keyWaitThreshold.Float64(t.threshold.Seconds()),
		keyWaitInterval.Float64(t.interval.Seconds()),
		keyMaxOpen.Int(ep.maxOpen),
		keyMaxIdle.Int(p.cfg.maxIdle),
		keyMinIdle.Int(p.cfg.minIdle),
		keyPeakInUse.Int(ep.peakInUse),
		keyHolders.Int(len(holders)),
	}
	if ep.waits > 0 {
		attrs = append(attrs, keyWaitMean.Float64(ep.total.Seconds()/float64(ep.waits)))
	}
	if ep.stalled > 0 {
		attrs = append(attrs, keyWaitStalled.Float64(ep.stalled.Seconds()))
	}
	if dropped > 0 {
		attrs = append(attrs, keyHoldersDrop.Int(dropped))
	}
	if truncated {
		attrs = append(attrs, keyWaitTruncated.Bool(true))
	}
	var links []trace.Link
	if continues.IsValid() {
		links = append(links, trace.Link{SpanContext: continues})
	}
	for _, h := range holders {
		if h.snap.ctx == nil {
			continue
		}
		if sc := trace.SpanContextFromContext(h.snap.ctx); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	_, span := t.tracer.Start(context.Background(), waitSpanName,
		trace.WithTimestamp(ep.start),
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithLinks(links...),
		trace.WithAttributes(attrs...))
	for _, h := range holders {
		span.AddEvent(holderEventName, trace.WithTimestamp(h.seen),
			trace.WithAttributes(checkoutAttrs(p.describe(h.snap))...))
	}
	span.End(trace.WithTimestamp(ep.end))
	return span.SpanContext()
}

// close runs once when the pool closes, after still-out leaks were emitted
// and the monitor stopped: it emits a slow episode still going, ends the
// leak spans still open, and unregisters the metric callback.
func (t *telemetry) close() {
	t.armed.Store(false)
	t.endEpisode(false)
	t.mu.Lock()
	t.closed = true
	for c, ls := range t.leakSpans {
		t.endUnresolved(ls)
		delete(t.leakSpans, c)
	}
	t.mu.Unlock()
	if t.callback != nil {
		if err := t.callback.Unregister(); err != nil {
			otel.Handle(fmt.Errorf("pgxleak: unregistering the metric callback: %w", err))
		}
	}
}
