package pgxleak

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pgxleak/pgxleak/internal/stack"
)

// watchStuck runs on the monitor goroutine after each wait sample in which
// callers may be waiting: it takes the (rate-limited) goroutine dump,
// reports goroutines that wait for a connection while holding one
// (Deadlock, at once rather than after the leak threshold), and logs
// one warning per stall that lasts the slow-wait threshold, naming the
// waiters' and the holders' lines.
func (p *pool) watchStuck(st sql.DBStats, stallSince time.Time, stalled time.Duration, threshold time.Duration) {
	warn := threshold > 0 && stalled >= threshold && !p.diagnosis.warnedStallIs(stallSince)
	// The server view from the first waiting sample on: it is read in the
	// background, so that the warning, a sample or more later, has it.
	d := p.diagnose(context.Background(), p.cfg.serverView)
	p.diagnosis.waits.join(d, p.db.Stats()) // read after the dump
	p.reportDeadlocks(d, st, stallSince)
	if warn {
		p.diagnosis.mu.Lock()
		p.diagnosis.warnedStall = stallSince
		p.diagnosis.mu.Unlock()
		p.warnExhausted(d, st, stalled)
	}
}

func (s *diagnosis) warnedStallIs(t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.warnedStall.Equal(t)
}

// reportDeadlocks emits a Deadlock for each checkout whose holder is
// waiting for a connection of the same pool, once per checkout.
func (p *pool) reportDeadlocks(d *findings, st sql.DBStats, stallSince time.Time) {
	var locked []Goroutine
	for _, w := range d.waiters {
		if len(w.Holds) > 0 {
			locked = append(locked, w)
		}
	}
	if len(locked) == 0 {
		return
	}
	whole := d.poolDeadlocked(st.MaxOpenConnections)
	s := &p.diagnosis
	s.mu.Lock()
	if s.deadlocks == nil {
		s.deadlocks = make(map[holderKey]bool)
	}
	seen := s.deadlocks
	s.deadlocks = make(map[holderKey]bool) // forget checkouts no longer out
	var due []report
	for i, c := range d.checkouts {
		k := d.keys[i]
		if seen[k] {
			s.deadlocks[k] = true
			continue
		}
		for _, w := range locked {
			if c.Holder != nil && !c.Holder.Exited && c.Holder.ID == w.ID {
				s.deadlocks[k] = true
				due = append(due, report{kind: Deadlock, snap: p.snapshotOf(k),
					stuck: &stuckReport{holder: c.Holder, server: c.Server, waitingAt: w.At, poolDeadlocked: whole}})
			}
		}
	}
	s.mu.Unlock()
	logged := false // a Deadlock's headline says when the whole pool is
	for _, r := range due {
		if r.snap.conn != nil && p.emit(r) && whole {
			logged = true
		}
	}
	p.reportPoolDeadlock(d, whole, logged)
}

// deadlockedCheckouts returns the checkouts reported as deadlocked that
// are still: they are not reported again as leaks.
func (s *diagnosis) deadlockedCheckouts() map[holderKey]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.deadlocks)
}

// reportPoolDeadlock logs, at ERROR and once until it ends, that the
// whole pool is deadlocked, unless a Deadlock logged in the same round
// said so already (logged): one event, one line. The per-checkout
// Deadlock reports are de-duplicated by line, so when they were
// suppressed this is the line that says it of the pool.
func (p *pool) reportPoolDeadlock(d *findings, whole, logged bool) {
	s := &p.diagnosis
	s.mu.Lock()
	already := s.poolDeadlocked
	s.poolDeadlocked = whole
	s.mu.Unlock()
	if !whole || already {
		return
	}
	var held, waiting [][2]string
	for _, w := range d.waiters {
		waiting = append(waiting, [2]string{shortLine(w.At), ""})
	}
	for _, c := range d.checkouts {
		held = append(held, [2]string{shortLine(c.Culprit), ""})
	}
	msg := fmt.Sprintf("pgxleak: pool deadlocked: %s; held at %s; waiting at %s",
		allHeldWaiting(len(d.checkouts)), countLines(held), countLines(waiting))
	p.monitor.recent.add(Deadlock, Frame{}, msg, nil, time.Now())
	if logged {
		return
	}
	line, attrs := fitLine(msg, []slog.Attr{
		slog.String("pool", p.name()), slog.Int("held", len(d.checkouts)), slog.Int("waiting", len(d.waiters))})
	p.logger().LogAttrs(context.Background(), slog.LevelError, line, attrs...)
}

// snapshotOf takes a fresh snapshot of the checkout k, or the zero
// snapshot if it has come back since.
func (p *pool) snapshotOf(k holderKey) snapshot {
	now := p.now()
	k.c.mu.Lock()
	defer k.c.mu.Unlock()
	if k.c.state != stateOut || k.c.checkoutAt != k.checkoutAt {
		return snapshot{}
	}
	return k.c.snapshotLocked(now)
}

// warnExhausted logs that the pool is exhausted: "pgxleak: pool exhausted
// for 1.2s (leaking): 43 goroutines waiting (app/service.go:50 ×40, ...),
// the longest for at least 1.2s; 3/3 connections held by
// app/service.go:36 ×2 (goroutine exited), ...; leaking: ...". At
// most one per stall, and one per report interval. A deadlock is one
// event: a whole pool deadlocked gets no warning beside its ERROR, and a
// holder that is deadlocked is named as such, not described again.
func (p *pool) warnExhausted(d *findings, st sql.DBStats, stalled time.Duration) {
	if d.poolDeadlocked(st.MaxOpenConnections) {
		return
	}
	s := &p.diagnosis
	s.mu.Lock()
	if !s.lastWarn.IsZero() && time.Since(s.lastWarn) < p.cfg.reportInterval {
		s.skipped++
		s.mu.Unlock()
		return
	}
	s.lastWarn = time.Now()
	skipped := s.skipped
	s.skipped = 0
	s.mu.Unlock()

	var waiting, held [][2]string
	for _, w := range d.waiters {
		waiting = append(waiting, [2]string{shortLine(w.At), ""})
	}
	for _, c := range d.checkouts {
		brief := holderBrief(c)
		if h := c.Holder; h != nil && !h.Exited && slices.ContainsFunc(d.waiters, func(w Goroutine) bool { return w.ID == h.ID && len(w.Holds) > 0 }) {
			brief = " (deadlocked: see the deadlock reported at ERROR)"
		}
		held = append(held, [2]string{shortLine(c.Culprit), brief})
	}
	maxOpen := "unlimited"
	if st.MaxOpenConnections > 0 {
		maxOpen = fmt.Sprint(st.MaxOpenConnections)
	}
	_, longest := s.waits.now(time.Now())
	verdict := p.judgeWith(d.checkouts, d.waiters, st.InUse, st.MaxOpenConnections)
	// The verdict's word comes first: a line too long for the log loses
	// its end (fitLine), never the verdict. Its reasoning, the longest
	// part, comes last; Inspect and the live page give it whole.
	msg := fmt.Sprintf("pgxleak: pool exhausted for %s (%s): %s waiting (%s), the longest for at least %s; %d/%s connections held by %s; %s",
		stalled.Round(100*time.Millisecond), verdict.Kind, numbered(len(d.waiters), "goroutine", "goroutines"), countLines(waiting), longest.Truncate(time.Millisecond), st.InUse, maxOpen, countLines(held), verdict.Reason)
	p.monitor.recent.add(Exhausted, Frame{}, msg, nil, time.Now())
	attrs := []slog.Attr{
		slog.String("pool", p.name()),
		slog.Duration("stalled", stalled.Round(time.Millisecond)),
		slog.Int("waiting", len(d.waiters)),
		slog.Duration("longest_wait", longest.Truncate(time.Millisecond)),
		slog.Int("in_use", st.InUse),
		slog.Int("max_open", st.MaxOpenConnections),
		slog.String("verdict", verdict.Kind),
	}
	if len(d.notes) > 0 {
		attrs = append(attrs, slog.String("notes", strings.Join(d.notes, "; ")))
	}
	if skipped > 0 {
		attrs = append(attrs, slog.Int("repeats", skipped))
	}
	line, attrs := fitLine(msg, attrs)
	p.logger().LogAttrs(context.Background(), slog.LevelWarn, line, attrs...)
}

// holderBrief is " (goroutine exited, idle in transaction)" for the
// exhaustion warning, "" when nothing is known.
func holderBrief(c Checkout) string {
	var parts []string
	if h := c.Holder; h != nil {
		switch {
		case h.Exited:
			parts = append(parts, "goroutine exited")
		case h.Returned:
			parts = append(parts, "returned from "+stack.ShortFunction(c.Culprit.Function))
		case h.State != "":
			parts = append(parts, "goroutine "+h.State)
		}
	}
	if s := c.Server; s != nil && s.State != "" && s.State != "idle" {
		v := s.State
		if s.WaitEventType == "Lock" {
			v += " waiting on a lock"
		}
		parts = append(parts, v)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// countLines groups equal (line, verdict) pairs, most frequent first:
// "app/a.go:50 ×40, app/b.go:70 ×3 (goroutine exited)".
func countLines(lines [][2]string) string {
	if len(lines) == 0 {
		return "none seen"
	}
	n := map[[2]string]int{}
	for _, l := range lines {
		n[l]++
	}
	keys := make([][2]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int {
		return cmp.Or(cmp.Compare(n[b], n[a]), cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d%s", k[0], n[k], k[1])
	}
	return strings.Join(parts, ", ")
}

// allHeldWaiting says that all n connections of a deadlocked pool are held
// by goroutines that wait for another.
func allHeldWaiting(n int) string {
	if n == 1 {
		return "its only connection is held by a goroutine that is itself waiting for a connection of this pool, so it cannot be returned"
	}
	return fmt.Sprintf("all %d connections are held by goroutines that are themselves waiting for a connection of this pool, so none can be returned", n)
}
