package pgxleak

import "fmt"

// Kind says what a report is about. The first three (LeakSuspected,
// LeakGarbageCollected, LeakStillOut) are leaks, a connection its holder
// should have given back ([Kind.Leak]); the others are events of the pool
// that explain or follow them, none of them a leak.
type Kind int

const (
	// LeakSuspected: held longer than the leak threshold. Reported once per
	// checkout, and not for one already reported as garbage-collected; if
	// the connection comes back later, a [Resolved] follow-up says after how
	// long.
	LeakSuspected Kind = iota + 1
	// LeakGarbageCollected: a *sql.Rows was garbage-collected without being
	// closed. That connection is lost to the pool for good.
	LeakGarbageCollected
	// LeakStillOut: still checked out when the pool was drained or closed.
	// Reported once per pool, at the first Drain or at Close; Earlier links
	// it to the checkout's earlier report, if any.
	LeakStillOut
	// Resolved: a suspected leak's connection came back (INFO); Held is the
	// whole time it was out.
	Resolved
	// Deadlock: a goroutine waits for a connection of the pool while it
	// holds one of the same pool (a nested query on a full pool). Reported
	// at ERROR within one wait-sampling interval, once per checkout;
	// WaitingAt is where it waits. In [Inspection].Reports, an entry with no
	// culprit says the whole pool is deadlocked.
	Deadlock
	// Exhausted: callers waited for a connection of a full pool: a
	// slow-wait episode (WithSlowWaitThreshold) or a pool-exhausted warning.
	// Listed in [Inspection].Reports; never given to WithOnLeak.
	Exhausted
	// Blocked: a connection held past the leak threshold whose statement
	// waits for a lock another backend holds (pg_blocking_pids), usually
	// another checkout's: not a leak. Reported once per checkout, at WARN,
	// instead of a suspected leak, naming the line that checked the
	// blocker out; fix that one.
	Blocked
)

// Leak reports whether k is a leak: a connection held too long, lost or
// still out, that its holder should have given back. Resolved, Deadlock,
// Exhausted and Blocked are reports, not leaks.
func (k Kind) Leak() bool { return k >= LeakSuspected && k <= LeakStillOut }

// String returns "suspected", "garbage_collected", "still_out",
// "resolved", "deadlock", "exhausted" or "blocked", the values of the kind attribute
// in logs, spans and metrics.
func (k Kind) String() string {
	switch k {
	case LeakSuspected:
		return "suspected"
	case LeakGarbageCollected:
		return "garbage_collected"
	case LeakStillOut:
		return "still_out"
	case Resolved:
		return "resolved"
	case Deadlock:
		return "deadlock"
	case Exhausted:
		return "exhausted"
	case Blocked:
		return "blocked"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// phrase names the kind in a sentence: "a suspected leak".
func (k Kind) phrase() string {
	switch k {
	case LeakSuspected:
		return "a suspected leak"
	case LeakGarbageCollected:
		return "a leaked connection (Rows garbage-collected)"
	case LeakStillOut:
		return "still out"
	case Resolved:
		return "a suspected leak that came back"
	case Deadlock:
		return "a deadlock (held while waiting for another)"
	case Exhausted:
		return "an exhausted pool (callers waiting)"
	case Blocked:
		return "blocked on another backend's lock"
	}
	return k.String()
}

// more counts n more reports of the kind in a summary line: "1 more
// suspected leak", "2 more suspected leaks".
func (k Kind) more(n int) string {
	return numbered(n, "more "+k.singular(), "more "+k.plural())
}

// singular names one report of the kind in a summary line.
func (k Kind) singular() string {
	switch k {
	case Resolved:
		return "suspected leak returned"
	case LeakSuspected:
		return "suspected leak"
	case LeakGarbageCollected:
		return "leaked connection (Rows garbage-collected without Close)"
	case LeakStillOut:
		return "still-out connection (at Drain or Close)"
	case Deadlock:
		return "deadlock (a connection held while waiting for another)"
	case Exhausted:
		return "wait on an exhausted pool"
	}
	return k.String()
}

// plural names several reports of the kind in a summary line.
func (k Kind) plural() string {
	switch k {
	case Resolved:
		return "suspected leaks returned"
	case LeakSuspected:
		return "suspected leaks"
	case LeakGarbageCollected:
		return "leaked connections (Rows garbage-collected without Close)"
	case LeakStillOut:
		return "still-out connections (at Drain or Close)"
	case Deadlock:
		return "deadlocks (a connection held while waiting for another)"
	case Exhausted:
		return "waits on an exhausted pool"
	case Blocked:
		return "connections blocked on another backend's lock"
	}
	return k.String()
}
