package pgxleak

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgxleak/pgxleak/internal/stack"
)

// monitor is the pool's reporting side: its goroutine (run) emits what the
// tracker queued and what its scans find.
//
// Ownership: stop and done are set once; done is closed by the monitor
// goroutine when it exits. reportMu guards the de-duplication state (seen,
// summaryDue); the callback's channels are set by startDelivery before the
// monitor starts; recent has its own lock.
type monitor struct {
	stop chan struct{}
	done chan struct{}

	reportMu   sync.Mutex
	seen       map[reportKey]*reportRate // guarded by reportMu
	summary    *time.Timer               // fires when suppressed reports are due a summary line
	summaryDue time.Time                 // guarded by reportMu; when summary fires; zero if stopped

	callbacks        chan Leak     // reports for the OnLeak callback; nil without one
	delivered        chan struct{} // closed when the callback's goroutine is done
	deliverGoroutine atomic.Uint64 // its ID, to recognise Close called from the callback
	lagging          atomic.Bool   // the callback's queue is full

	recent recentReports // the recent reports Inspect lists
}

// run is the pool's monitor goroutine: it symbolises and emits reports,
// scans for connections held too long, keeps the minimum of idle
// connections and samples wait statistics.
func (p *pool) run() {
	defer close(p.monitor.done)
	var scan, keep, waits <-chan time.Time
	if t := p.cfg.leakThreshold; t > 0 {
		tk := time.NewTicker(min(max(t/4, 5*time.Millisecond), time.Second))
		defer tk.Stop()
		scan = tk.C
	}
	// The keeper's period follows the idle time in force, checked at every
	// round and every wait sample (see keepIdleEvery).
	var keepTick *time.Ticker
	var keepEvery time.Duration
	followIdleTime := func() {
		if d := keepIdleEvery(p.limits().maxIdleTime); d != keepEvery {
			keepTick.Reset(d)
			keepEvery = d
		}
	}
	if p.cfg.minIdle > 0 && p.db != nil {
		keepEvery = keepIdleEvery(p.limits().maxIdleTime)
		keepTick = time.NewTicker(keepEvery)
		defer keepTick.Stop()
		keep = keepTick.C
	}
	sideIdleTick := time.NewTicker(max(p.cfg.sideIdle/4, time.Millisecond)) // every pool, sql.Open's too
	defer sideIdleTick.Stop()
	if p.db != nil {
		p.tel.startWaitSampling()
		tk := time.NewTicker(p.cfg.waitInterval)
		defer tk.Stop()
		waits = tk.C
	}
	for {
		select {
		case <-p.monitor.stop:
			p.flushFinal()
			return
		case <-p.tracker.wake:
			p.flush()
		case <-scan:
			p.scanLeaks()
		case <-p.monitor.summary.C:
			p.summarize(false)
		case <-keep:
			followIdleTime()
			// On its own goroutine, so that scans and reports never wait
			// behind a slow connect; one at a time.
			if p.keeping.CompareAndSwap(false, true) {
				p.background.Go(func() {
					defer p.keeping.Store(false)
					p.keepMinIdle(p.internalCtx)
				})
			}
		case <-sideIdleTick.C:
			p.diagnosis.side.closeIfIdle(p.cfg.sideIdle)
		case <-waits:
			p.tel.sampleWaitStats()
			p.sampleVerdict()
			if keepTick != nil {
				followIdleTime()
			}
		}
	}
}

func (p *pool) flush() {
	for _, r := range p.tracker.takeQueue(false) {
		p.emitQueued(r)
	}
}

// flushFinal emits what is queued, closes the queue, and writes the
// summary lines of every report still suppressed: nothing comes after it.
func (p *pool) flushFinal() {
	for _, r := range p.tracker.takeQueue(true) {
		p.emitQueued(r)
	}
	p.summarize(true)
}

// emitQueued emits a report the tracker queued, judging it first if it
// is a checkout that came back before it was judged.
func (p *pool) emitQueued(r report) {
	if r.returned && r.kind == 0 {
		p.judgeReturned(r.snap)
		return
	}
	p.emit(r)
}

// scanLeaks reports the checkouts held past the leak threshold, each once:
// as suspected leaks, or as Blocked when the server's view says their
// statement waits for another backend's lock. One event, one line: a
// checkout reported as deadlocked is not reported again as a leak while
// it stays deadlocked, and one whose backend the server's view does not
// cover yet is held back until a view read after it became due arrives,
// for at most serverWait (then it is a suspected leak). A held-back
// checkout that comes back before then is judged at its return, with the
// view if it has arrived (see judgeReturned): held past the threshold, it
// is reported all the same. With WithIgnoredFunction given to Open, a
// checkout's stack is symbolised once, when it passes the threshold, to
// decide whether it is held on purpose; one that is is never reported.
func (p *pool) scanLeaks() {
	now, limit := p.now(), int64(p.cfg.leakThreshold)
	decide := len(p.cfg.onPurpose) > 0
	if decide {
		for _, s := range p.tracker.undecided(now, limit) {
			s.conn.decide(s.seq, p.onPurpose(stack.Resolve(s.pcs)) != "")
		}
	}
	deadlocked := p.diagnosis.deadlockedCheckouts()
	var (
		view          map[uint32]ServerActivity
		viewAt        time.Time
		ask, needView bool
		pids          []uint32
	)
	// Never side.configured(): its lock is held across a connect; a pool
	// without pgx has no backend PIDs, and its reads fail at once.
	if p.cfg.serverView && !p.cfg.pgBouncer {
		pids = p.outPIDs()
		var failure string
		view, viewAt, failure = p.diagnosis.side.viewOf(pids)
		ask = view != nil || failure == ""
	}
	suspected, blocked := p.tracker.scan(now, limit, func(c *connState) scanVerdict {
		if decide && (c.decided != c.checkouts || c.onPurpose) {
			return scanHold
		}
		if deadlocked[holderKey{c, c.checkoutAt}] {
			return scanHold
		}
		if !ask || c.pid == 0 {
			return scanSuspected
		}
		if view == nil || viewAt.Before(p.epoch.Add(time.Duration(c.checkoutAt+limit))) {
			if now-c.checkoutAt < limit+int64(p.cfg.serverWait) {
				needView = true
				return scanAwait
			}
			return scanSuspected
		}
		if a, ok := view[c.pid]; ok && waitsOnLock(a) {
			return scanBlocked
		}
		return scanSuspected
	})
	if needView {
		p.refreshServerView(pids)
	}
	for _, s := range blocked {
		p.emit(report{kind: Blocked, snap: s})
	}
	for _, s := range suspected {
		p.emit(report{kind: LeakSuspected, snap: s})
	}
}

// waitsOnLock reports whether a backend's statement waits for a lock
// another backend holds.
func waitsOnLock(a ServerActivity) bool { return a.WaitEventType == "Lock" && len(a.BlockedBy) > 0 }

// judgeReturned reports a checkout held past the leak threshold that came
// back while scanLeaks held it back for the server's view: as Blocked if
// a view read while it was out, after it became due, says its statement
// waited for another backend's lock, else as what it would have been
// without the wait, a suspected leak, followed at once by the Resolved of
// one that came back. Held is the whole time it was out. Neither is
// diagnosed now: its goroutine and its backend have moved on.
func (p *pool) judgeReturned(s snapshot) {
	a, blocked := p.returnedView(s)
	if blocked {
		p.emit(report{kind: Blocked, snap: s, returned: true, server: a})
		return
	}
	p.tracker.suspectedLeaks.Add(1)
	p.emit(report{kind: LeakSuspected, snap: s, returned: true, server: a})
	s.suspected, s.reportedAt[0] = true, s.checkoutAt+s.held
	p.tracker.resolvedLeaks.Add(1)
	p.emit(report{kind: Resolved, snap: s, returned: true})
}

// returnedView returns the server's view of a checkout that came back
// before it was judged, if one was read while it was out and after it
// became due (nil otherwise: a view read later may show the backend
// serving the next checkout), and whether its statement then waited for
// another backend's lock. The blockers are named by the checkouts that
// were out when the view was read and still are; when a blocker is a
// connection of the pool that has come back since, the view is left out
// (nil) on a blocked verdict: the report then says "another backend", not
// a line that no longer holds it.
func (p *pool) returnedView(s snapshot) (*ServerActivity, bool) {
	if !p.cfg.serverView || p.cfg.pgBouncer || s.pid == 0 {
		return nil, false
	}
	view, at, _ := p.diagnosis.side.viewOf([]uint32{s.pid})
	a, ok := view[s.pid]
	due := p.epoch.Add(time.Duration(s.checkoutAt + int64(p.cfg.leakThreshold)))
	back := p.epoch.Add(time.Duration(s.checkoutAt + s.held))
	if !ok || at.Before(due) || at.After(back) {
		return nil, false
	}
	if !waitsOnLock(a) {
		return &a, false
	}
	var blockers []snapshot
	named := true
	p.tracker.each(func(c *connState) {
		if c.pid == 0 || !slices.Contains(a.BlockedBy, c.pid) {
			return
		}
		if c.state != stateOut || c.internal || p.epoch.Add(time.Duration(c.checkoutAt)).After(at) {
			named = false
			return
		}
		blockers = append(blockers, c.snapshotLocked(s.checkoutAt+s.held))
	})
	if !named {
		return nil, true
	}
	a.Culprits = nil
	for _, b := range blockers {
		if a.Culprits == nil {
			a.Culprits = make(map[uint32]Frame, len(blockers))
		}
		a.Culprits[b.pid] = p.describe(b).Culprit
	}
	return &a, true
}

// outPIDs returns the backend PIDs of the user checkouts out now.
func (p *pool) outPIDs() []uint32 {
	var pids []uint32
	p.tracker.each(func(c *connState) {
		if c.state == stateOut && !c.internal && c.pid != 0 {
			pids = append(pids, c.pid)
		}
	})
	return pids
}

// emit symbolises, de-duplicates and delivers one report: to the tracer,
// the logger and the OnLeak callback. It reports whether the report was
// logged (not suppressed by WithReportInterval).
func (p *pool) emit(r report) bool {
	l := Leak{Kind: r.kind, Checkout: p.describe(r.snap)}
	l.Earlier, l.EarlierAt = p.earlier(r)
	p.annotate(&l, r)
	p.monitor.recent.addLeak(l)
	p.tel.leak(l, r.snap)
	if !p.admit(&l) {
		return false
	}
	lg := p.logger()
	level := slog.LevelWarn
	if l.Kind == Resolved {
		level = slog.LevelInfo
	}
	if l.Kind == Deadlock {
		level = slog.LevelError
	}
	ctx := context.Background()
	msg, debug := l.String(), lg.Enabled(ctx, slog.LevelDebug)
	attrs := p.logAttrs(l, debug)
	if !debug {
		msg, attrs = fitLine(msg, attrs)
	}
	lg.LogAttrs(ctx, level, msg, attrs...)
	p.deliver(l) // after the log line, so a callback sees it written
	return true
}

// logAttrs are a report's attributes in the log: short by default (the
// headline carries the culprit); the stack and the checkout time only when
// the logger is enabled at DEBUG. The full report is in the Leak given to
// WithOnLeak and in the leak span.
func (p *pool) logAttrs(l Leak, debug bool) []slog.Attr {
	attrs := []slog.Attr{
		slog.String("kind", l.Kind.String()),
		slog.String("pool", l.Pool),
		slog.Duration("held", l.Held.Round(time.Millisecond)),
		slog.String("tx_status", l.TxStatus),
	}
	if l.BackendPID != 0 {
		attrs = append(attrs, slog.Any("backend_pid", l.BackendPID))
	}
	if st := l.LastStatement; st != "" {
		if !debug {
			st = shorten(st, maxLogStatement)
		}
		attrs = append(attrs, slog.String("last_statement", st))
	}
	if l.Repeats > 0 {
		attrs = append(attrs, slog.Int("repeats", l.Repeats))
	}
	attrs = append(attrs, stuckAttrs(l)...)
	if callers := p.callers(l.Stack); callers != "" && l.Kind != Resolved {
		attrs = append(attrs, slog.String("callers", callers))
	}
	if debug {
		attrs = append(attrs, slog.Time("checked_out_at", l.CheckedOutAt))
		if len(l.Stack) > 0 {
			attrs = append(attrs, slog.String("stack", formatStack(l.Stack)))
		}
	}
	return attrs
}

// maxLogStatement bounds the statement in a default log line; the Leak
// carries it whole (up to maxStatement).
const maxLogStatement = 120

// maxCallers bounds the frames of the application a log line lists.
const maxCallers = 4

// callers lists the application's frames of a stack after the culprit,
// innermost first: "app/handler.go:20 (app.serve) < main.go:31
// (main.main)". Library, standard-library, runtime and test-runner frames
// are left out.
func (p *pool) callers(fs []Frame) string {
	var out []string
	first := true
	for _, f := range fs {
		if sf := stack.Frame(f); !isUserFrame(sf, p.cfg.libraryPrefix) {
			continue
		}
		if first { // the culprit, already in the headline
			first = false
			continue
		}
		if len(out) == maxCallers {
			out = append(out, "…")
			break
		}
		out = append(out, f.String())
	}
	return strings.Join(out, " < ")
}
