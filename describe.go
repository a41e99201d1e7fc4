package pgxleak

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pgxleak/pgxleak/internal/stack"
)

// formatStack renders frames like a goroutine's stack in a panic.
func formatStack(fs []Frame) string {
	return stack.Format(toStackFrames(fs))
}

// describe symbolises a snapshot. It is only called to make a report or
// answer an inspection, never on the hot path.
func (p *pool) describe(s snapshot) Checkout {
	frames := stack.Resolve(s.pcs)
	// Drop pgxleak's own frames at the top: the stack starts where
	// database/sql called in.
	for len(frames) > 0 && isLibrary(frames[0].Function, nil) && !isTest(frames[0]) &&
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
	return c
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
			"WithStackSampling(1), in tests at least, names every one and lets IgnoreFunction match it", n, n)
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

func fromStackFrames(fs []stack.Frame) []Frame {
	out := make([]Frame, len(fs))
	for i, f := range fs {
		out[i] = Frame(f)
	}
	return out
}

func toStackFrames(fs []Frame) []stack.Frame {
	out := make([]stack.Frame, len(fs))
	for i, f := range fs {
		out[i] = stack.Frame(f)
	}
	return out
}

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
