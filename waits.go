package pgxleak

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.30.0"
	"go.opentelemetry.io/otel/trace"
)

// maxEpisodeIntervals bounds a wait-episode span, so that a pool that stays
// exhausted is reported while it is exhausted, not when it recovers: after
// this many sampling intervals the span ends and a linked one continues.
const maxEpisodeIntervals = 60

// maxHolderEvents bounds the holder events of one wait-episode span; the
// holders that held their connection longest are kept.
const maxHolderEvents = 64

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
	t.recordWaitTime(st)
	t.p.diagnosis.waits.read(now, st)

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
	// Callers may be waiting now: waits started, none ended since some
	// did, or the last dump saw waiters (some may be served, not all).
	waiting := dCount > 0 || !w.stallSince.IsZero() || t.p.diagnosis.waits.any()
	saturated := st.MaxOpenConnections > 0 && st.InUse >= st.MaxOpenConnections
	t.arm(waiting || saturated, st)
	// Pending requests and timeouts are counted from the dumps (pending.go):
	// one is due while the last one saw waiters or waits started since.
	counting := !t.pend.idle(st.WaitCount)
	t.pend.arm(waiting || counting)
	switch {
	case waiting:
		t.p.watchStuck(st, w.stallSince, stalled, t.threshold) // waits in progress, deadlocks and exhaustion, from a goroutine dump
	case counting:
		t.p.diagnosis.waits.clear()
		t.p.diagnose(context.Background(), false)
	default:
		t.p.diagnosis.waits.clear()
	}
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
	l := t.p.limits()
	ep.maxOpen, ep.maxIdle, ep.minIdle = st.MaxOpenConnections, l.maxIdle, t.p.minIdle(l)
	if dTime >= t.threshold || stalled >= t.threshold {
		ep.slow = true
	}
	if waiting || saturated {
		for _, s := range t.p.tracker.outSnapshots(t.p.now()) {
			ep.holders[holderKey{s.conn, s.checkoutAt}] = holder{snap: s, seen: now}
		}
	}
	if now.Sub(ep.start) >= maxEpisodeIntervals*t.interval {
		t.endEpisode(true)
		w.episode = &episode{start: now, holders: make(map[holderKey]holder)}
	}
}

// recordWaitTime records wait_time from the growth of st since the cursor.
// database/sql gives no individual waits, only their count and their sum,
// and it counts a wait when it starts but adds its length when it ends. So
// each counted wait is recorded once, with the mean of the wait time
// accumulated until then: the histogram's count and sum are exact (sum:
// once the waits have ended), its distribution is one of means. Waits
// counted while no wait time has arrived yet, and wait time arriving with
// no new waits counted, stay behind the cursor until both have grown.
func (t *telemetry) recordWaitTime(st sql.DBStats) {
	r := &t.rec
	r.mu.Lock()
	defer r.mu.Unlock() // held while recording, so a collection never sees the cursor moved without the values
	n, d := st.WaitCount-r.count, st.WaitDuration-r.duration
	if n <= 0 || d <= 0 {
		return
	}
	r.count, r.duration = st.WaitCount, st.WaitDuration
	a := t.poolAttrs()
	if a == nil || !t.waitTime.Enabled(context.Background()) {
		return
	}
	mean := d.Seconds() / float64(n)
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
	t.p.monitor.recent.addEpisode(ep)
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
		keyMaxIdle.Int(ep.maxIdle),
		keyMinIdle.Int(ep.minIdle),
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

// addEpisode records a slow wait episode.
func (r *recentReports) addEpisode(ep *episode) {
	h := fmt.Sprintf("pgxleak: callers waited %s for connections in %s (%s", ep.total.Round(time.Millisecond),
		ep.end.Sub(ep.start).Round(time.Millisecond), numbered(int(ep.waits), "wait", "waits"))
	if ep.stalled > 0 {
		h += fmt.Sprintf(", none served for %s", ep.stalled.Round(time.Millisecond))
	}
	h += fmt.Sprintf("); peak %d of %d connections in use", ep.peakInUse, ep.maxOpen)
	r.add(Exhausted, Frame{}, h, nil, ep.end)
}

// episode is a run of sampling intervals in which callers waited.
type episode struct {
	start, end time.Time
	waits      int64
	total      time.Duration
	stalled    time.Duration
	peakInUse  int
	maxOpen    int // the limits in force at the last sample
	maxIdle    int
	minIdle    int
	slow       bool
	holders    map[holderKey]holder
}
