package pgxleak

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pgxleak/pgxleak/internal/stack"
)

// describe symbolises a snapshot. It is only called to make a report or
// answer an inspection, never on the hot path.
func (p *pool) describe(s snapshot) Checkout {
	frames := stack.Resolve(s.pcs)
	// Drop pgxleak's own frames at the top: the stack starts where
	// database/sql called in.
	for len(frames) > 0 && isLibrary(frames[0].Function) && !isTest(frames[0]) &&
		strings.HasPrefix(frames[0].Function, "github.com/pgxleak/pgxleak") {
		frames = frames[1:]
	}
	c := Checkout{
		Pool:          p.name(),
		Stack:         fromStackFrames(frames),
		CheckedOutAt:  p.epoch.Add(time.Duration(s.checkoutAt)).Round(0),
		Held:          time.Duration(s.held),
		BackendPID:    s.pid,
		LastStatement: truncateStatement(s.statement),
		TxStatus:      txStatusString(s.txStatus),
		Suspected:     s.suspected,
		Terminated:    s.conn != nil && s.conn.isTerminated(),
	}
	if s.lateFrom != 0 {
		c.SeenAt = c.CheckedOutAt
		c.CheckedOutAt = p.epoch.Add(time.Duration(s.lateFrom)).Round(0)
		c.Held += time.Duration(s.checkoutAt - s.lateFrom)
	}
	if i := culpritIndex(frames, p.cfg.libraryPrefix); i >= 0 {
		c.Culprit = Frame(frames[i])
	} else {
		c.NoCulprit = p.noCulprit(s, frames)
	}
	c.OnPurpose = p.onPurpose(frames)
	if s.handoff {
		// The opener handed it over: named at the line that waited for
		// it when a dump saw that, else at its first use.
		c.FirstUse = c.Culprit
		if a := s.asked; a != nil {
			c.Culprit, c.Stack, c.NoCulprit = a.at, a.stack, ""
		} else {
			c.AskUnseen = true
		}
	}
	return c
}

// onPurpose returns the function given to WithIgnoredFunction at Open that is
// on a checkout's stack, if any: the checkout is held on purpose.
func (p *pool) onPurpose(frames []stack.Frame) string {
	for _, fn := range p.cfg.onPurpose {
		for _, f := range frames {
			if f.Function == fn {
				return fn
			}
		}
	}
	return ""
}

// noCulprit says why a checkout has no culprit: capture off, a checkout
// not sampled, or a stack with no frame of the application.
func (p *pool) noCulprit(s snapshot, frames []stack.Frame) string {
	switch n := p.cfg.sampleEvery; {
	case len(frames) > 0:
		return noCulpritReason(frames, len(s.pcs), len(s.pcs) >= p.cfg.stackDepth)
	case p.cfg.stackDepth == 0:
		return "stack capture is off (WithStackDepth(0))"
	case n > 1:
		return fmt.Sprintf("this checkout was not sampled: WithStackSampling(%d) records the stack of one checkout in %d; "+
			"WithStackSampling(1), in tests at least, names every one and lets WithIgnoredFunction match it", n, n)
	}
	return "no stack was recorded for this checkout"
}

// earlier links a garbage-collected or still-out report to the earlier
// report of the same checkout, if any.
func (p *pool) earlier(r report) (Kind, time.Time) {
	s := r.snap
	switch {
	case r.kind == LeakStillOut && s.gcLeaked:
		return LeakGarbageCollected, p.epoch.Add(time.Duration(s.reportedAt[1])).Round(0)
	case (r.kind == LeakStillOut || r.kind == LeakGarbageCollected) && s.suspected:
		return LeakSuspected, p.epoch.Add(time.Duration(s.reportedAt[0])).Round(0)
	}
	return 0, time.Time{}
}

// maxStatement bounds the statement text in reports and spans: generated
// SQL can be megabytes long.
const maxStatement = 1024

func truncateStatement(s string) string { return shorten(s, maxStatement) }

// shorten cuts s to at most n bytes, on a rune boundary, marking the cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func (p *pool) checkouts() []Checkout {
	snaps := p.tracker.outSnapshots(p.now())
	out := make([]Checkout, len(snaps))
	for i, s := range snaps {
		out[i] = p.describe(s)
	}
	return append(out, p.unseenCheckouts()...)
}

// unseenCheckouts reconciles the tracker with database/sql's count of
// connections in use. database/sql's background opener connects on its
// own goroutine and hands the connection to a waiting caller with no
// driver call on the caller's goroutine, and a connection it made is
// handed out with no ResetSession until a caller returned it once (sql.go:
// openNewConnection, putConnDBLocked, driverConn.resetSession). Such a
// checkout is seen only at its first operation. Until then, DBStats.InUse
// counts it and the tracker does not: each connection of that difference
// that can only be one of those (connected by the opener and never seen
// out, or, for a driver without ResetSession, any idle one) is listed with
// Unseen set. DBStats.InUse also counts connections being opened or
// closed, which are not listed.
//
// It reads db.Stats() before taking the tracker's locks: database/sql
// closes connections under its own lock, and closing takes the tracker's.
func (p *pool) unseenCheckouts() []Checkout {
	if p.db == nil {
		return nil
	}
	return p.unseen(p.db.Stats().InUse)
}

// unseen lists the checkouts the tracker did not see, given that
// database/sql counts inUse connections in use. Drain, which has emptied
// database/sql's idle list, passes math.MaxInt: every candidate still
// open is out.
func (p *pool) unseen(inUse int) []Checkout {
	now := p.now()
	var out int
	type candidate struct {
		pid       uint32
		idleSince int64
	}
	var candidates []candidate
	p.tracker.each(func(c *connState) {
		switch {
		case c.state == stateOut:
			out++
		case c.state == stateIdle && (c.pristine || c.noReset):
			candidates = append(candidates, candidate{c.pid, c.idleSince})
		}
	})
	n := min(inUse-out, len(candidates))
	if n <= 0 {
		return nil
	}
	slices.SortFunc(candidates, func(a, b candidate) int { return cmp.Compare(a.idleSince, b.idleSince) })
	name := p.name()
	unseen := make([]Checkout, n)
	for i := range unseen {
		// Which candidates are out is known only when all of them are;
		// otherwise each could be the oldest, whose age bounds them all.
		c := candidates[0]
		if n == len(candidates) {
			c = candidates[i]
		}
		unseen[i] = Checkout{
			Pool:         name,
			CheckedOutAt: p.epoch.Add(time.Duration(c.idleSince)).Round(0),
			Held:         time.Duration(now - c.idleSince),
			TxStatus:     txStatusString(txUnknown),
			Unseen:       true,
		}
		if n == len(candidates) {
			unseen[i].BackendPID = c.pid
		}
	}
	return unseen
}
