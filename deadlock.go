package pgxleak

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
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
	p.reportPoolDeadlock(d, whole)
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
	for _, r := range due {
		if r.snap.conn != nil {
			p.emit(r)
		}
	}
}

// reportPoolDeadlock logs, at ERROR and once until it ends, that the
// whole pool is deadlocked. The per-checkout Deadlock reports are
// de-duplicated by line, so this is the line that says it of the pool.
func (p *pool) reportPoolDeadlock(d *findings, whole bool) {
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
	msg := fmt.Sprintf("pgxleak: pool deadlocked: all %d connections are held by goroutines that are themselves waiting for a connection of this pool, so none can be returned; held at %s; waiting at %s",
		len(d.checkouts), countLines(held), countLines(waiting))
	p.logger().LogAttrs(context.Background(), slog.LevelError, msg,
		slog.String("pool", p.name()), slog.Int("held", len(d.checkouts)), slog.Int("waiting", len(d.waiters)))
	p.monitor.recent.add(Deadlock, Frame{}, msg, nil, time.Now())
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
// for 1.2s: 43 goroutines waiting (app/service.go:50 ×40, ...); 3/3
// connections held by app/service.go:36 ×2 (goroutine exited), ...". At
// most one per stall, and one per report interval.
func (p *pool) warnExhausted(d *findings, st sql.DBStats, stalled time.Duration) {
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
		held = append(held, [2]string{shortLine(c.Culprit), holderBrief(c)})
	}
	maxOpen := "unlimited"
	if st.MaxOpenConnections > 0 {
		maxOpen = fmt.Sprint(st.MaxOpenConnections)
	}
	verdict := p.judgeWith(d.checkouts, d.waiters, st.InUse, st.MaxOpenConnections)
	msg := fmt.Sprintf("pgxleak: pool exhausted for %s: %d goroutines waiting (%s); %d/%s connections held by %s; verdict: %s",
		stalled.Round(100*time.Millisecond), len(d.waiters), countLines(waiting), st.InUse, maxOpen, countLines(held), verdict.Reason)
	p.monitor.recent.add(Exhausted, Frame{}, msg, nil, time.Now())
	attrs := []slog.Attr{
		slog.String("pool", p.name()),
		slog.Duration("stalled", stalled),
		slog.Int("waiting", len(d.waiters)),
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
	p.logger().LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...)
}

// holderBrief is " (goroutine exited, idle in transaction)" for the
// exhaustion warning, "" when nothing is known.
func holderBrief(c Checkout) string {
	var parts []string
	if h := c.Holder; h != nil {
		switch {
		case h.Exited:
			parts = append(parts, "goroutine exited")
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
