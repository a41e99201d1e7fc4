package pgxleak

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.30.0"
	"go.opentelemetry.io/otel/semconv/v1.41.0/dbconv"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgxleak/pgxleak/internal/goid"
)

// instrumentationName names pgxleak's tracer and meter.
const instrumentationName = "github.com/pgxleak/pgxleak"

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
	keyVerdict       = attribute.Key("pgxleak.verdict") // the Verdict's Kind
)

// durationBuckets are the histogram bucket boundaries, in seconds, for the
// create, wait and use times: from 100µs to 5 minutes. The SDK's default
// boundaries are made for milliseconds and would put nearly every value in
// the first bucket.
var durationBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
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
	pendingReq metric.Int64ObservableUpDownCounter // db.client.connection.pending_requests (pending.go)
	timeouts   metric.Int64ObservableCounter       // db.client.connection.timeouts (pending.go)
	verdict    metric.Int64ObservableGauge         // pgxleak.pool.verdict (judge.go)
	needed     metric.Float64ObservableGauge       // pgxleak.pool.connections.needed
	srvLimit   metric.Int64ObservableGauge         // pgxleak.server.connection.limit
	srvCount   metric.Int64ObservableGauge         // pgxleak.server.connection.count
	srvInst    metric.Int64ObservableGauge         // pgxleak.server.instances
	callback   metric.Registration

	pend pendingState // pending requests and timeouts, from goroutine dumps

	// The leak counter's sites (code.*), at most maxLeakSites per pool;
	// guarded by mu.
	leakSites map[Frame]bool

	// Handoff attribution (see handoff). armed is set by the wait sampler
	// while callers wait, so that ResetSession costs one atomic load
	// otherwise.
	armed       atomic.Bool
	armedAt     atomic.Int64 // pool time when armed
	handoffWait atomic.Int64 // db.Stats().WaitDuration already attributed, in ns

	mu        sync.Mutex
	leakSpans map[*connState]*leakSpan
	closed    bool

	w   waitState  // the monitor goroutine's, and close's after the monitor stopped
	rec waitRecord // wait_time's cursor, advanced by the sampler and the metric callback
}

// poolAttrs holds the measurement options for one pool name, built once so
// that recording a value allocates nothing.
type poolAttrs struct {
	name    string
	record  []metric.RecordOption
	observe []metric.ObserveOption
	idle    []metric.ObserveOption
	used    []metric.ObserveOption
	verdict [][]metric.ObserveOption // by verdictKinds
}

func newPoolAttrs(name string) *poolAttrs {
	pn := semconv.DBClientConnectionPoolName(name)
	id := instanceAttrs()
	set := metric.WithAttributeSet(attribute.NewSet(append(id, pn)...))
	a := &poolAttrs{
		name:    name,
		record:  []metric.RecordOption{set},
		observe: []metric.ObserveOption{set},
		idle:    []metric.ObserveOption{metric.WithAttributeSet(attribute.NewSet(append(id, pn, semconv.DBClientConnectionStateIdle)...))},
		used:    []metric.ObserveOption{metric.WithAttributeSet(attribute.NewSet(append(id, pn, semconv.DBClientConnectionStateUsed)...))},
	}
	for _, k := range verdictKinds {
		a.verdict = append(a.verdict, []metric.ObserveOption{metric.WithAttributeSet(attribute.NewSet(append(id, pn, keyVerdict.String(k))...))})
	}
	return a
}

// instanceAttrs are service.name and service.instance.id, the same values
// as the sessions' application_name (identity.go), which every pgxleak
// metric carries: a metric series, a pg_stat_activity row and a log line
// name the same instance. They are the resource attributes the
// OpenTelemetry SDK reads from the same environment; with the Prometheus
// exporter, do not also copy them onto every series
// (WithResourceAsConstantLabels), which would repeat the labels.
func instanceAttrs() []attribute.KeyValue {
	id := processIdentity()
	return []attribute.KeyValue{semconv.ServiceName(id.service), semconv.ServiceInstanceID(id.instance)}
}

// verdictKinds are the verdict kinds (judge.go), in the order the metric
// pgxleak.pool.verdict lists them.
var verdictKinds = []string{"healthy", "leaking", "undersized", "blocked", "deadlocked"}

// maxLeakSites is how many culprit sites (code.function.name,
// code.file.path, code.line.number) pgxleak.connection.leaks keeps apart
// per pool: 20. Leaks at further sites are counted under one overflow
// site, code.function.name "(other)", so that a leak in generated or
// widely shared code cannot grow the series without bound.
const maxLeakSites = 20

// overflowSite is the site leaks beyond maxLeakSites are counted under.
var overflowSite = Frame{Function: "(other)", File: "(other)"}

// leakSpan is the span of a suspected leak, kept open after detection so
// that it can end at the connection's return.
type leakSpan struct {
	seq        uint64 // identifies the checkout, with the connection
	span       trace.Span
	detectedAt time.Time
	open       bool
	timer      *time.Timer
}

func newTelemetry(p *pool) *telemetry {
	cfg := p.cfg
	t := &telemetry{
		p:         p,
		threshold: cfg.slowWaitThreshold,
		interval:  cfg.waitInterval,
		leakSpans: make(map[*connState]*leakSpan),
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

	pendingReq, err10 := dbconv.NewClientConnectionPendingRequestsObservable(m)
	timeouts, err11 := dbconv.NewClientConnectionTimeoutsObservable(m)
	t.pendingReq, t.timeouts = pendingReq.Inst(), timeouts.Inst()
	err12 := t.verdictInstruments(m)

	var err8, err9 error
	t.leaks, err8 = m.Int64Counter("pgxleak.connection.leaks",
		metric.WithUnit("{leak}"),
		metric.WithDescription("Connection leaks reported, by kind (suspected: held past the leak threshold; garbage_collected: Rows dropped without Close; still_out: out when the pool was drained or closed; deadlock: held by a goroutine waiting for another) and by the culprit's code.function.name, code.file.path and code.line.number (at most 20 sites per pool, then \"(other)\")."))
	t.suspected, err9 = m.Int64ObservableUpDownCounter("pgxleak.connection.suspected",
		metric.WithUnit("{connection}"),
		metric.WithDescription("Connections checked out now that were reported as leaks and have not come back."))
	if t.leaks == nil {
		t.leaks = noop.Int64Counter{}
	}
	if t.suspected == nil {
		t.suspected = noop.Int64ObservableUpDownCounter{}
	}
	err := errors.Join(err1, err2, err3, err4, err5, err6, err7, err8, err9, err10, err11, err12)
	reg, rerr := m.RegisterCallback(t.observe, t.count, t.maxConns, t.idleMax, t.idleMin, t.suspected, t.pendingReq, t.timeouts,
		t.verdict, t.needed, t.srvLimit, t.srvCount, t.srvInst)
	t.callback = reg
	return errors.Join(err, rerr)
}

// poolAttrs returns the pool's measurement options, or nil while its name
// is not known yet: a pool opened with OpenDB without WithPoolName takes
// its name from its first pgx connection (and stays unnamed over another
// driver). It locks p.mu and tracker.mu until the name is known, so it must
// not be called with either or a connection's lock held.
func (t *telemetry) poolAttrs() *poolAttrs {
	if a := t.attrs.Load(); a != nil {
		return a
	}
	p := t.p
	name := p.name()
	known := name != "" || p.tracker.size() > 0
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
func (t *telemetry) observeCreate(ns int64) {
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
func (t *telemetry) observeUse(ns int64) {
	if a := t.attrs.Load(); a != nil {
		t.useTime.Record(context.Background(), seconds(ns), a.record...)
	}
}

// useTimeRecorded reports whether the use-time histogram records anything:
// false for the no-op meter provider, and for the global one until the
// application installs a real one.
func (t *telemetry) useTimeRecorded() bool {
	return t.useTime.Enabled(context.Background())
}

// observe is the callback of the observed instruments. It also records the
// waits that ended since the sampler last did (see recordWaitTime), so that
// wait_time is current at every collection. With the *sql.DB at
// hand (pools opened with Open or OpenDB) the counts and the maximum come
// from db.Stats(), the idle limits from database/sql too (see limits.go),
// so a db.SetMaxIdleConns after Open shows. For a
// pool opened with sql.Open("pgxleak", dsn), the counts come from the
// tracker and the limits, which only the *sql.DB knows, are not reported.
func (t *telemetry) observe(_ context.Context, o metric.Observer) error {
	a := t.poolAttrs()
	if a == nil {
		a = newPoolAttrs("")
	}
	var suspected int64
	var open, out int64
	t.p.tracker.each(func(c *connState) {
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
	t.recordWaitTime(st) // waits that ended since the last tick, so a collection sees them
	o.ObserveInt64(t.count, int64(st.InUse), a.used...)
	o.ObserveInt64(t.count, int64(st.Idle), a.idle...)
	if st.MaxOpenConnections > 0 {
		o.ObserveInt64(t.maxConns, int64(st.MaxOpenConnections), a.observe...)
	}
	l := t.p.limits()
	o.ObserveInt64(t.idleMax, int64(l.maxIdle), a.observe...)
	o.ObserveInt64(t.idleMin, int64(t.p.minIdle(l)), a.observe...)
	o.ObserveInt64(t.pendingReq, t.pend.pending.Load(), a.observe...)
	if goid.Fast() { // timeouts need goroutine identity (pending.go)
		o.ObserveInt64(t.timeouts, t.pend.timeouts.Load(), a.observe...)
	}
	t.observeVerdict(o, a)
	return nil
}

// verdictInstruments creates the verdict's instruments: the verdict as a
// state set (one series per kind, 1 for the pool's, 0 for the others, so
// that an alert selects pgxleak_pool_verdict{pgxleak_verdict="undersized"}
// == 1), the connections the load needs, and the server's limits.
func (t *telemetry) verdictInstruments(m metric.Meter) error {
	var err [5]error
	t.verdict, err[0] = m.Int64ObservableGauge("pgxleak.pool.verdict",
		metric.WithDescription("The pool's verdict: 1 for its kind (pgxleak.verdict: healthy, leaking, undersized, blocked, deadlocked), 0 for the others."))
	t.needed, err[1] = m.Float64ObservableGauge("pgxleak.pool.connections.needed",
		metric.WithUnit("{connection}"),
		metric.WithDescription("The connections the load needs by Little's law: checkouts asked for per second × mean use time, over the last 30 seconds."))
	t.srvLimit, err[2] = m.Int64ObservableGauge("pgxleak.server.connection.limit",
		metric.WithUnit("{connection}"),
		metric.WithDescription("The server's max_connections less its reserved connections: what clients may use."))
	t.srvCount, err[3] = m.Int64ObservableGauge("pgxleak.server.connection.count",
		metric.WithUnit("{connection}"),
		metric.WithDescription("Client backends on the server, from pg_stat_activity, at the last read (at most a minute old)."))
	t.srvInst, err[4] = m.Int64ObservableGauge("pgxleak.server.instances",
		metric.WithUnit("{instance}"),
		metric.WithDescription("Instances of this service and pool connected to the server: distinct application_names service/*/pool."))
	if t.verdict == nil {
		t.verdict = noop.Int64ObservableGauge{}
	}
	if t.needed == nil {
		t.needed = noop.Float64ObservableGauge{}
	}
	for _, g := range []*metric.Int64ObservableGauge{&t.srvLimit, &t.srvCount, &t.srvInst} {
		if *g == nil {
			*g = noop.Int64ObservableGauge{}
		}
	}
	return errors.Join(err[:]...)
}

// observeVerdict observes the verdict's instruments, once the monitor
// has judged the pool.
func (t *telemetry) observeVerdict(o metric.Observer, a *poolAttrs) {
	v := t.p.diagnosis.verdict.current.Load()
	if v == nil {
		return
	}
	for i, k := range verdictKinds {
		var on int64
		if k == v.Kind {
			on = 1
		}
		o.ObserveInt64(t.verdict, on, a.verdict[i]...)
	}
	o.ObserveFloat64(t.needed, v.Needed, a.observe...)
	if l := t.p.diagnosis.verdict.limits.Load(); l != nil {
		o.ObserveInt64(t.srvLimit, int64(l.available), a.observe...)
		o.ObserveInt64(t.srvCount, int64(l.clients), a.observe...)
		o.ObserveInt64(t.srvInst, int64(l.instances), a.observe...)
	}
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
	resolved := l.Kind == Resolved
	if resolved {
		l.Kind = LeakSuspected // spans and metrics say suspected, resolved
	}
	detectedAt := l.CheckedOutAt.Add(l.Held) // for a resolved report, the return

	t.mu.Lock()
	defer t.mu.Unlock()
	if !resolved {
		t.countLeak(l, s)
	}
	prev := t.leakSpans[s.conn]
	if prev != nil && prev.seq != s.seq {
		t.endUnresolved(prev) // an earlier checkout of this connection
		delete(t.leakSpans, s.conn)
		prev = nil
	}
	if resolved {
		delete(t.leakSpans, s.conn)
		if prev != nil && prev.open {
			prev.timer.Stop()
			prev.span.SetAttributes(keyLeakResolved.Bool(true), keyHeld.Float64(l.Held.Seconds()))
			prev.span.AddEvent("pgxleak.leak.resolved", trace.WithTimestamp(detectedAt))
			prev.span.SetStatus(codes.Ok, "")
			prev.span.End(trace.WithTimestamp(detectedAt))
			return
		}
		span := t.startLeakSpan(l, true, s, prev)
		span.SetStatus(codes.Ok, "")
		span.End(trace.WithTimestamp(detectedAt))
		return
	}
	if prev != nil {
		t.endUnresolved(prev) // suspected before, now garbage-collected or still out
	}
	span := t.startLeakSpan(l, false, s, prev)
	span.SetStatus(codes.Error, l.String())
	if l.Kind != LeakSuspected || t.closed || t.p.cfg.leakThreshold <= 0 {
		delete(t.leakSpans, s.conn)
		span.End(trace.WithTimestamp(detectedAt))
		return
	}
	span.AddEvent("pgxleak.leak.detected", trace.WithTimestamp(detectedAt))
	ls := &leakSpan{seq: s.seq, span: span, detectedAt: detectedAt, open: true}
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

// countLeak adds one to pgxleak.connection.leaks for l's kind and culprit
// site. When the checkout was made inside a span, the measurement is made
// in that span's context, so that the SDK's trace-based exemplar filter
// (its default) links the count to the trace. t.mu is held.
func (t *telemetry) countLeak(l Leak, s snapshot) {
	site := l.Culprit
	if t.leakSites == nil {
		t.leakSites = make(map[Frame]bool)
	}
	if !t.leakSites[site] {
		if len(t.leakSites) >= maxLeakSites {
			site = overflowSite
		} else {
			t.leakSites[site] = true
		}
	}
	attrs := append(instanceAttrs(),
		semconv.DBClientConnectionPoolName(l.Pool),
		keyLeakKind.String(l.Kind.String()),
		semconv.CodeFunctionName(site.Function),
		semconv.CodeFilePath(site.File),
		semconv.CodeLineNumber(site.Line))
	ctx := context.Background()
	if s.ctx != nil {
		if sc := trace.SpanContextFromContext(s.ctx); sc.IsValid() {
			ctx = trace.ContextWithSpanContext(ctx, sc)
		}
	}
	t.leaks.Add(ctx, 1, metric.WithAttributes(attrs...))
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
func (t *telemetry) startLeakSpan(l Leak, resolved bool, s snapshot, earlier *leakSpan) trace.Span {
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
		keyLeakResolved.Bool(resolved),
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
		kv = append(kv, semconv.CodeStacktrace(formatStack(c.Stack)))
	}
	if c.BackendPID != 0 {
		kv = append(kv, keyBackendPID.Int64(int64(c.BackendPID)))
	}
	if c.LastStatement != "" {
		kv = append(kv, keyStatement.String(c.LastStatement))
	}
	return kv
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

// waitState is the wait sampler's state.
type waitState struct {
	lastCount    int64
	lastDuration time.Duration
	lastTick     time.Time
	stallSince   time.Time // since when callers wait and none got a connection; zero if not stalled
	episode      *episode
	previous     trace.SpanContext // the truncated episode a new one continues
}

// waitRecord is wait_time's cursor: the WaitCount and WaitDuration of
// db.Stats() already recorded, from zero (the pool's own counters start
// there, and a monitor that starts late must not skip the first waits).
// The sampler's tick and the metric callback both advance it, under mu, so
// that waits that ended are visible at the next collection and each is
// recorded once.
type waitRecord struct {
	mu       sync.Mutex
	count    int64
	duration time.Duration
}
