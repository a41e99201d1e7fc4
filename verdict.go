package pgxleak

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"

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
		b.WriteString(h.String())
	}
	if s := c.Server; s != nil {
		b.WriteString("; server: ")
		b.WriteString(s.String())
	}
	if c.Terminated {
		b.WriteString("; backend terminated")
	}
	return b.String()
}

// String is the holder's verdict: "goroutine exited", or "goroutine 812
// now at app/worker.go:29 in net/http.(*Client).Do [IO wait]".
func (h *Holder) String() string {
	var b strings.Builder
	if h.Exited {
		b.WriteString("goroutine exited (" + exitedMeaning[strings.Index(exitedMeaning, "unless"):] + ")")
	} else {
		fmt.Fprintf(&b, "goroutine %d", h.Goroutine)
		if !h.At.IsZero() {
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

// String is the server's verdict: "idle in transaction, holding locks
// that block PID 4121 (checked out at app/service.go:70)".
func (s *ServerActivity) String() string {
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
	if f.IsZero() {
		return "an unknown line"
	}
	return stack.Frame(f).ShortFile() + ":" + strconv.Itoa(f.Line)
}

// IsZero reports whether f is the zero Frame (no stack was recorded).
func (f Frame) IsZero() bool { return stack.Frame(f).IsZero() }

// deadlockHeadline is a LeakDeadlock's first line.
func (l Leak) deadlockHeadline() string {
	g := "a goroutine"
	if l.Holder != nil {
		g = "goroutine " + strconv.FormatUint(l.Holder.Goroutine, 10)
	}
	s := fmt.Sprintf("deadlock: %s waits for a connection at %s while holding one of the same pool, checked out at %s, held %s",
		g, shortLine(l.WaitingAt), l.Culprit, l.Held.Round(1e6))
	if l.PoolDeadlocked {
		s += "; the whole pool is deadlocked: every connection is held by a goroutine waiting for another, so none can be returned"
	} else {
		s += "; it proceeds only if another goroutine returns a connection (do not query the pool inside an open Rows or Tx: use the Tx, or read the rows first)"
	}
	if l.Server != nil {
		s += "; server: " + l.Server.String()
	}
	return s
}

// stuckAttrs are a report's log attributes beyond its headline, which
// already carries the holder's and the server's verdicts: kept short, as
// the default line is (the holder's stack is on the Leak, for OnLeak).
func stuckAttrs(l Leak) []slog.Attr {
	var a []slog.Attr
	if h := l.Holder; h != nil && !h.Exited && h.Goroutine != 0 {
		a = append(a, slog.Uint64("holder_goroutine", h.Goroutine))
	}
	if len(l.Notes) > 0 {
		a = append(a, slog.String("notes", strings.Join(l.Notes, "; ")))
	}
	if l.Terminated {
		a = append(a, slog.Bool("terminated", true))
	}
	if l.Kind == LeakDeadlock && l.PoolDeadlocked {
		a = append(a, slog.Bool("pool_deadlocked", true))
	}
	return a
}
