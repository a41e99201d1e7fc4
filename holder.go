package pgxleak

import (
	"fmt"
	"strings"
	"time"
	"unique"

	"github.com/pgxleak/pgxleak/internal/gdump"
	"github.com/pgxleak/pgxleak/internal/goid"
	"github.com/pgxleak/pgxleak/internal/stack"
)

// Goroutine identity. Every checkout records the ID of the goroutine that
// made it (a few nanoseconds, read from the runtime's g and self-checked
// at start-up by internal/goid). When a report is made or the pool is
// inspected, one goroutine dump is joined with the checkouts by that ID:
// a holder present in the dump is alive (its stack and state are shown);
// one absent from a complete dump has exited, since the runtime never
// reuses goroutine IDs.

// holderOf joins one checkout with a goroutine dump. It returns nil, with
// a note saying why, when the dump cannot answer: the dump is older than
// the checkout, it was cut short, or identity is unavailable and the
// checkout stack matches no goroutine, or several. A checkout whose Rows
// was garbage-collected has no holder, and no note: the report says so.
// A live holder that has returned from the function that took the
// connection is marked Returned.
func (p *pool) holderOf(s snapshot, c Checkout, d *gdump.Snapshot) (*Goroutine, string) {
	// Only a checkout recorded before the first runtime.Stack call is
	// certainly in the dump. One recorded while the dump was taken, or
	// just after, could look like its goroutine still waiting for a
	// connection, or not yet started. (The caller also checks, by checkout
	// number, that the checkout was out before the dump: the hot path's
	// coarse clock may lag under load.)
	if d.Started.Before(p.epoch.Add(time.Duration(s.checkoutAt))) {
		return nil, newerThanDump
	}
	if s.gcLeaked {
		return nil, "" // its Rows was garbage-collected: no goroutine holds it
	}
	if s.goid != 0 {
		g := d.Lookup(s.goid)
		if g == nil {
			if d.Truncated {
				return nil, "the goroutine dump was cut short; holders missing from it are not shown as exited"
			}
			return &Goroutine{ID: s.goid, Exited: true, MatchedBy: matchedByID}, ""
		}
		h := p.holderFrom(g, matchedByID)
		h.Returned = returnedFrom(c, g)
		return h, ""
	}
	return p.matchByStack(c, d)
}

func (p *pool) holderFrom(g *gdump.Goroutine, matchedBy string) *Goroutine {
	h := &Goroutine{ID: g.ID, State: detach(g.State), Waiting: g.Wait, Stack: dumpFrames(g.Frames), MatchedBy: matchedBy}
	h.At, _ = p.userFrame(g)
	return h
}

// culpritTail returns the frames of c's stack outside its culprit, with
// the runtime's left out, and whether c has a culprit on its stack.
func culpritTail(c Checkout) ([]Frame, bool) {
	if stack.Frame(c.Culprit).IsZero() {
		return nil, false
	}
	for i, f := range c.Stack {
		if f == c.Culprit {
			return userTail(c.Stack[i+1:]), true
		}
	}
	return nil, false
}

// insideCulprit reports whether g is still inside the function that
// checked c out: the culprit's function is on its stack, called from the
// same lines as at the checkout (tail, from culpritTail).
func insideCulprit(c Checkout, tail []Frame, g *gdump.Goroutine) bool {
	for j, f := range g.Frames {
		if f.Function == c.Culprit.Function && f.File == c.Culprit.File && sameTail(tail, g.Frames[j+1:]) {
			return true
		}
	}
	return false
}

// returnedFrom reports whether the live holder g of c has returned from
// the function that checked the connection out (see insideCulprit). It is
// false when that cannot be told: no culprit recorded, or g's stack cut
// short in the dump.
func returnedFrom(c Checkout, g *gdump.Goroutine) bool {
	tail, ok := culpritTail(c)
	if !ok || g.Truncated || g.Elided > 0 {
		return false
	}
	return !insideCulprit(c, tail, g)
}

// matchByStack finds the holder without goroutine identity: the one
// goroutine still inside the function that checked the connection out,
// called from the same lines. A holder that has returned from that
// function, or exited, cannot be told apart this way, so neither is
// guessed: the note says so.
func (p *pool) matchByStack(c Checkout, d *gdump.Snapshot) (*Goroutine, string) {
	why := "goroutine identity unavailable (" + goid.Status() + ")"
	tail, ok := culpritTail(c)
	if !ok {
		return nil, why + ", and a checkout without a recorded stack cannot be matched to its goroutine"
	}
	var found []*gdump.Goroutine
	for i := range d.Goroutines {
		if g := &d.Goroutines[i]; insideCulprit(c, tail, g) {
			found = append(found, g)
		}
	}
	switch len(found) {
	case 1:
		h := p.holderFrom(found[0], matchedByStack)
		return h, ""
	case 0:
		return nil, why + ": no goroutine is inside the function that checked the connection out; its holder has returned from it or exited"
	}
	return nil, fmt.Sprintf("%s: %s match the checkout stack; the holder is not guessed", why, numbered(len(found), "goroutine", "goroutines"))
}

// userTail drops the runtime's frames (goexit) from a resolved stack.
func userTail(fs []Frame) []Frame {
	out := fs[:0:0]
	for _, f := range fs {
		if !strings.HasPrefix(f.Function, "runtime.") {
			out = append(out, f)
		}
	}
	return out
}

// sameTail reports whether a dump's outer frames are the checkout's outer
// frames (the dump may go deeper when the checkout stack was cut at the
// recorded depth).
func sameTail(want []Frame, got []gdump.Frame) bool {
	i := 0
	for _, g := range got {
		if strings.HasPrefix(g.Function, "runtime.") {
			continue
		}
		if i == len(want) {
			return true
		}
		if want[i].Function != g.Function || want[i].File != g.File || want[i].Line != g.Line {
			return false
		}
		i++
	}
	return i == len(want)
}

// userFrame is the innermost frame of g that is the user's code, by the
// culprit's rule (isUserFrame): the line of user code it is at.
func (p *pool) userFrame(g *gdump.Goroutine) (Frame, bool) {
	f, ok := g.UserFrame(func(f gdump.Frame) bool {
		return !isUserFrame(stack.Frame{Function: f.Function, File: f.File, Line: f.Line}, p.cfg.libraryPrefix)
	})
	return dumpFrame(f), ok
}

func dumpFrames(fs []gdump.Frame) []Frame {
	out := make([]Frame, len(fs))
	for i, f := range fs {
		out[i] = dumpFrame(f)
	}
	return out
}

// dumpFrame is a frame of a goroutine dump, its strings detached.
func dumpFrame(f gdump.Frame) Frame {
	return Frame{Function: detach(f.Function), File: detach(f.File), Line: f.Line}
}

// detach copies a string out of a goroutine dump. A parsed dump's strings
// are slices of its whole text (up to gdump.MaxBytes): one kept in a
// report (the recent reports, an OnLeak callback's copy) or a wait site
// would keep all of it alive, as long as that lives. unique.Make copies
// each distinct string once while a copy of it is alive (its handle is
// dropped at once, so a string may be copied again after a collection),
// and the dump's goroutines share most of theirs.
func detach(s string) string { return unique.Make(s).Value() }
