package pgxleak

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// reportKey is what de-duplication merges on: reports of the same kind
// with the same culprit. Reports without a culprit are never merged.
type reportKey struct {
	kind    Kind
	culprit Frame
}

// reportRate is one culprit's de-duplication state.
type reportRate struct {
	last       time.Time // the last report or summary line written
	suppressed int       // reports suppressed since then
}

// admit decides whether a report is written or counted for the culprit's
// next summary line, setting l.Repeats.
func (p *pool) admit(l *Leak) bool {
	if l.Culprit == (Frame{}) {
		return true // nothing tells two such checkouts apart
	}
	p.monitor.reportMu.Lock()
	defer p.monitor.reportMu.Unlock()
	key := reportKey{kind: l.Kind, culprit: l.Culprit}
	rate := p.monitor.seen[key]
	now := time.Now()
	if rate == nil {
		rate = &reportRate{}
		p.monitor.seen[key] = rate
	} else if now.Sub(rate.last) < p.cfg.reportInterval {
		rate.suppressed++
		p.armSummary(rate.last.Add(p.cfg.reportInterval))
		return false
	}
	l.Repeats, rate.suppressed, rate.last = rate.suppressed, 0, now
	return true
}

// armSummary makes the monitor write summary lines at due, or earlier.
// reportMu is held.
func (p *pool) armSummary(due time.Time) {
	if !p.monitor.summaryDue.IsZero() && !due.Before(p.monitor.summaryDue) {
		return
	}
	p.monitor.summaryDue = due
	p.monitor.summary.Reset(time.Until(due))
}

// summarize writes a summary line for every culprit whose reports were
// suppressed for a whole report interval ("2 more suspected leaks at
// app/service.go:36 (app.get) since 20:38:21"), or for all of them when
// final, so that no count waits for a next report that may never come.
func (p *pool) summarize(final bool) {
	type line struct {
		key   reportKey
		n     int
		since time.Time
	}
	var lines []line
	p.monitor.reportMu.Lock()
	now := time.Now()
	p.monitor.summaryDue = time.Time{}
	for key, rate := range p.monitor.seen {
		if rate.suppressed == 0 {
			continue
		}
		due := rate.last.Add(p.cfg.reportInterval)
		if final || !now.Before(due) {
			lines = append(lines, line{key, rate.suppressed, rate.last})
			rate.suppressed, rate.last = 0, now
		} else {
			p.armSummary(due)
		}
	}
	p.monitor.reportMu.Unlock()
	slices.SortFunc(lines, func(a, b line) int { return a.since.Compare(b.since) })
	lg := p.logger()
	for _, ln := range lines {
		level := slog.LevelWarn
		if ln.key.kind == Resolved {
			level = slog.LevelInfo
		}
		msg := fmt.Sprintf("pgxleak: %s at %s since %s", ln.key.kind.more(ln.n), ln.key.culprit, ln.since.Format(time.TimeOnly))
		msg, attrs := fitLine(msg, []slog.Attr{
			slog.String("kind", ln.key.kind.String()),
			slog.String("pool", p.name()),
			slog.Int("count", ln.n)})
		lg.LogAttrs(context.Background(), level, msg, attrs...)
	}
}
