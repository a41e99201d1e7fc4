package pgxleak

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/pgxleak/pgxleak/internal/stack"
)

// The verdict parts of a report: what the holder goroutine and the server
// say, right after the line and the time held, so that the first line of a
// report answers "is anyone ever going to give this connection back?".

// exitedMeaning is what an exited holder means, said carefully: the
// connection may have been handed on.
const exitedMeaning = "the goroutine that took it has exited; unless it handed the Rows/Tx/Conn to another goroutine, nothing can return the connection"

// stuckVerdict renders "; goroutine exited; server: idle in transaction, ...",
// or "" when nothing is known beyond the checkout.
func (c Checkout) stuckVerdict() string {
	var b strings.Builder
	if h := c.Holder; h != nil {
		b.WriteString("; ")
		b.WriteString(h.verdict())
	}
	if s := c.Server; s != nil {
		b.WriteString("; server: ")
		b.WriteString(s.verdict())
	}
	if c.Terminated {
		b.WriteString("; backend terminated")
	}
	return b.String()
}

// verdict is a holder's verdict: "goroutine exited", or "goroutine 812
// now at app/worker.go:29 in net/http.(*Client).Do [IO wait]".
func (h *Goroutine) verdict() string {
	var b strings.Builder
	if h.Exited {
		b.WriteString("goroutine exited (" + exitedMeaning[strings.Index(exitedMeaning, "unless"):] + ")")
	} else {
		fmt.Fprintf(&b, "goroutine %d", h.ID)
		if !stack.Frame(h.At).IsZero() {
			fmt.Fprintf(&b, " now at %s", shortLine(h.At))
			if fn := h.calleeOf(); fn != "" {
				fmt.Fprintf(&b, " in %s", fn)
			}
		}
		if h.State != "" {
			fmt.Fprintf(&b, " [%s", h.State)
			if h.Waiting > 0 {
				fmt.Fprintf(&b, ", %s", h.Waiting)
			}
			b.WriteString("]")
		}
	}
	if h.MatchedBy != matchedByID {
		fmt.Fprintf(&b, " (found by its %s: goroutine identity unavailable)", h.MatchedBy)
	}
	return b.String()
}

// verdict is the server's verdict: "idle in transaction, holding locks
// that block PID 4121 (checked out at app/service.go:70)".
func (s *ServerActivity) verdict() string {
	var b strings.Builder
	b.WriteString(s.State)
	if s.WaitEventType == "Lock" && len(s.BlockedBy) > 0 {
		fmt.Fprintf(&b, ", waiting on a lock (%s) held by %s", s.WaitEvent, s.pids(s.BlockedBy))
	} else if s.WaitEventType != "" && s.State == "active" {
		fmt.Fprintf(&b, ", waiting on %s/%s", s.WaitEventType, s.WaitEvent)
	}
	if len(s.Blocking) > 0 {
		fmt.Fprintf(&b, ", holding locks that block %s", s.pids(s.Blocking))
	}
	return b.String()
}

// pids renders "PID 4121 (checked out at app/service.go:70), PID 4122".
func (s *ServerActivity) pids(ps []uint32) string {
	parts := make([]string, 0, len(ps))
	for _, p := range ps {
		part := "PID " + strconv.FormatUint(uint64(p), 10)
		if f, ok := s.Culprits[p]; ok {
			part += " (checked out at " + shortLine(f) + ")"
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, ", ")
}

// shortLine is "app/service.go:70", or "an unknown line".
func shortLine(f Frame) string {
	if stack.Frame(f).IsZero() {
		return "an unknown line"
	}
	return stack.Frame(f).ShortFile() + ":" + strconv.Itoa(f.Line)
}

// deadlockHeadline is a Deadlock's first line.
func (l Leak) deadlockHeadline() string {
	g := "a goroutine"
	if l.Holder != nil {
		g = "goroutine " + strconv.FormatUint(l.Holder.ID, 10)
	}
	s := fmt.Sprintf("deadlock: %s waits for a connection at %s while holding one of the same pool, checked out at %s, held %s",
		g, shortLine(l.WaitingAt), l.Culprit, l.Held.Round(1e6))
	if l.PoolDeadlocked {
		s += "; the whole pool is deadlocked: every connection is held by a goroutine waiting for another, so none can be returned"
	} else {
		s += "; it proceeds only if another goroutine returns a connection (do not query the pool inside an open Rows or Tx: use the Tx, or read the rows first)"
	}
	if l.Server != nil {
		s += "; server: " + l.Server.verdict()
	}
	return s
}

// stuckAttrs are a report's log attributes beyond its headline, which
// already carries the holder's and the server's verdicts: kept short, as
// the default line is (the holder's stack is on the Leak, for OnLeak).
func stuckAttrs(l Leak) []slog.Attr {
	var a []slog.Attr
	if h := l.Holder; h != nil && !h.Exited && h.ID != 0 {
		a = append(a, slog.Uint64("holder_goroutine", h.ID))
	}
	if len(l.Notes) > 0 {
		a = append(a, slog.String("notes", strings.Join(l.Notes, "; ")))
	}
	if l.Terminated {
		a = append(a, slog.Bool("terminated", true))
	}
	if l.Kind == Deadlock && l.PoolDeadlocked {
		a = append(a, slog.Bool("pool_deadlocked", true))
	}
	return a
}

// verdict returns the headline's clauses, most important first: what
// happened and where, then what else is known about it. New facts about a
// leak (its holder, the server's view) go in as further clauses.
func (l Leak) verdict() []string {
	var v []string
	switch {
	case l.Kind == Resolved:
		v = append(v, fmt.Sprintf("connection returned after %s", l.Held.Round(time.Millisecond)),
			fmt.Sprintf("it was reported as a suspected leak: checked out at %s", l.culpritOrReason()))
	case l.Kind == LeakSuspected:
		v = append(v, fmt.Sprintf("suspected leak: %s", l.Checkout))
	case l.Kind == Deadlock:
		v = append(v, l.deadlockHeadline())
	case l.Kind == Blocked:
		v = append(v, fmt.Sprintf("blocked, not a leak: %s", l.Checkout), "the lock is held by "+l.blockers())
	case l.Kind == LeakGarbageCollected:
		v = append(v, "leaked connection: Rows garbage-collected without Close", l.Checkout.String(), "it never returns to the pool")
	default:
		v = append(v, fmt.Sprintf("%s, still out when the pool was drained or closed", l.Checkout))
	}
	if l.Earlier != 0 {
		v = append(v, fmt.Sprintf("already reported as %s at %s", l.Earlier.phrase(), l.EarlierAt.Format(time.TimeOnly)))
	}
	if l.Repeats > 0 {
		v[0] += fmt.Sprintf(" (+%d more like it)", l.Repeats)
	}
	return v
}

// blockers names the backends a Blocked connection waits for: "PID 4120,
// checked out at app/service.go:60 (app.transfer): fix that line", or
// "PID 4120 (not a connection of this pool)".
func (c Checkout) blockers() string {
	if c.Server == nil || len(c.Server.BlockedBy) == 0 {
		return "another backend"
	}
	parts := make([]string, 0, len(c.Server.BlockedBy))
	for _, pid := range c.Server.BlockedBy {
		part := "PID " + strconv.FormatUint(uint64(pid), 10)
		if f, ok := c.Server.Culprits[pid]; ok {
			part += ", checked out at " + f.String() + ": fix that line"
		} else {
			part += " (not a connection of this pool)"
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, "; ")
}

func (c Checkout) culpritOrReason() string {
	if c.Culprit == (Frame{}) && c.NoCulprit != "" {
		return "an unknown line (" + c.NoCulprit + ")"
	}
	return c.Culprit.String()
}

// calleeOf returns the function h's user frame is calling, for "now at
// app/worker.go:29 in net/http.(*Client).Do"; "" when At is innermost.
func (h *Goroutine) calleeOf() string {
	for i, f := range h.Stack {
		if f == h.At && i > 0 {
			return h.Stack[i-1].Function
		}
	}
	return ""
}

// How a holder was found (Goroutine.MatchedBy).
const (
	matchedByID    = "goroutine id"
	matchedByStack = "checkout stack"
)
