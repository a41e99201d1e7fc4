package pgxleak

import (
	"fmt"
	"strings"
	"time"

	"github.com/pgxleak/pgxleak/internal/stack"
)

// Frame is a resolved stack frame.
type Frame struct {
	Function string `json:"function"` // fully qualified: "github.com/acme/app.(*Server).getUser"
	File     string `json:"file"`     // absolute path
	Line     int    `json:"line"`
}

// String returns "dir/file.go:42 (pkg.func)", or a note that no stack was
// recorded.
func (f Frame) String() string { return stack.Frame(f).Location() }

// Checkout describes a connection that is checked out. Its JSON field
// names are stable (they are the live page's JSON).
//
// A checkout reads no system clock: CheckedOutAt comes from a clock the
// pool refreshes every 64th of the leak threshold, but every 1ms to 10ms.
// It may be early by that much (more when the process is starved of CPU),
// and Held long by as much; never the other way. While
// a meter provider records the connection use-time metric, both are read
// from the system clock.
type Checkout struct {
	Pool          string        `json:"pool"`                     // the pool's name
	Culprit       Frame         `json:"culprit"`                  // the first frame of the user's code; zero if none was recorded (see NoCulprit)
	NoCulprit     string        `json:"no_culprit,omitempty"`     // when Culprit is zero: why, and what to do about it
	Stack         []Frame       `json:"stack,omitempty"`          // the checkout's stack, from database/sql's caller outwards
	CheckedOutAt  time.Time     `json:"checked_out_at"`           // when database/sql handed it out (resolution: see above); for a checkout seen late (see SeenAt), the earliest it can have been
	Held          time.Duration `json:"held_ns"`                  // how long it has been (or was) out (resolution: see above); for a checkout seen late, at most this long
	BackendPID    uint32        `json:"backend_pid,omitempty"`    // the server process, for pg_stat_activity and pg_terminate_backend; 0 if unknown
	LastStatement string        `json:"last_statement,omitempty"` // the last statement run on it, without arguments; "" if none or WithoutStatements
	TxStatus      string        `json:"tx_status"`                // "idle", "in transaction", "in failed transaction" or "unknown"
	Suspected     bool          `json:"suspected"`                // already reported as held too long

	// SeenAt is set for a checkout that made no driver call when it
	// happened: database/sql's background opener handed the connection to
	// a waiting caller, or to a later one, with no ResetSession (or the
	// driver has none). pgxleak saw it at its first operation, at SeenAt;
	// CheckedOutAt is then when the connection was connected or last
	// returned, so Held is an upper bound. The leak threshold counts from
	// SeenAt, so that a suspected leak is never a guess.
	SeenAt time.Time `json:"seen_at,omitzero"`
	// FirstUse is set for a connection database/sql's background opener
	// handed to a caller that waited for it: the line of its first use,
	// where pgxleak saw the checkout. Culprit and Stack are then the line
	// that asked for it and the waiter's stack, as a goroutine dump saw
	// them while it waited (goroutine identity ties the two), or, when no
	// dump saw it wait (AskUnseen), the first use too.
	FirstUse  Frame `json:"first_use,omitzero"`
	AskUnseen bool  `json:"ask_unseen,omitempty"`
	// Unseen marks a connection database/sql counts in use
	// (DBStats.InUse) that no driver call has shown pgxleak yet: handed
	// out by the background opener, holder unknown until its first
	// statement. Culprit and Stack are empty; CheckedOutAt and Held are
	// bounds as for SeenAt, and BackendPID is set only when pgxleak can
	// tell which connection it is.
	Unseen bool `json:"unseen,omitempty"`

	// Holder is the goroutine that checked the connection out, as a
	// goroutine dump saw it when the report was made or the pool
	// inspected; nil when unknown (Checkouts never takes a dump).
	Holder *Goroutine `json:"holder,omitempty"`
	// Server is what the server says of the connection's backend, read
	// when the report was made or the pool inspected; nil when unknown.
	Server *ServerActivity `json:"server,omitempty"`
	// OnPurpose is set for a checkout held on purpose: the function given
	// to [WithIgnoredFunction] at [Open] that is on its stack. Such a checkout
	// is listed, but never reported as a leak.
	OnPurpose string `json:"on_purpose,omitempty"`
	// Terminated says its backend was terminated ([Terminate],
	// [WithTerminateStillOut]): the server has ended its session; the
	// connection is discarded when it comes back.
	Terminated bool `json:"terminated,omitempty"`
}

// Goroutine is a goroutine as a goroutine dump saw it: the holder of a
// checkout ([Checkout].Holder), joined with the goroutine identity recorded
// at the checkout, or a goroutine waiting for a connection
// ([Inspection].Waiters).
type Goroutine struct {
	ID        uint64        `json:"goroutine"`            // the goroutine's ID; 0 if not known
	Exited    bool          `json:"exited,omitempty"`     // a holder that has exited: unless it handed its Rows, Tx or Conn to another goroutine, nothing can return the connection
	Returned  bool          `json:"returned,omitempty"`   // a live holder no longer inside the function that checked the connection out (Culprit, called from the same lines): unless it handed the Rows, Tx or Conn on, a leak; At is then unrelated work
	State     string        `json:"state,omitempty"`      // as the runtime names it: "IO wait", "select", "chan receive", "sync.Mutex.Lock", "running", ...
	Waiting   time.Duration `json:"waiting_ns"`           // how long it has been in State, as the runtime reports it (whole minutes; 0 below one)
	At        Frame         `json:"at"`                   // its innermost frame of user code now: for a waiter, the line that asked for a connection
	Stack     []Frame       `json:"stack,omitempty"`      // its stack now, innermost first
	MatchedBy string        `json:"matched_by,omitempty"` // for a holder, how it was found: "goroutine id", or a fallback named here
	// Waited is, for a waiter, how long it has waited at least, as the
	// wait sampler's dumps saw it (see PoolStats.LongestWait): finer than
	// Waiting's whole minutes. 0 when no sampler dump has seen it yet.
	Waited time.Duration `json:"waited_ns,omitempty"`
	// Holds lists, for a waiter, the connections of the same pool it holds
	// while it waits: non-empty means a deadlock (it waits for itself).
	Holds []Checkout `json:"holds,omitempty"`
}

// ServerActivity is the server's view of a checked-out connection's
// backend, from pg_stat_activity.
type ServerActivity struct {
	State         string    `json:"state"`                     // "active", "idle", "idle in transaction", "idle in transaction (aborted)", ...
	WaitEventType string    `json:"wait_event_type,omitempty"` // e.g. "Lock", "Client"
	WaitEvent     string    `json:"wait_event,omitempty"`      // e.g. "transactionid", "ClientRead"
	XactStart     time.Time `json:"xact_start,omitzero"`
	QueryStart    time.Time `json:"query_start,omitzero"`
	StateChange   time.Time `json:"state_change,omitzero"`
	BlockedBy     []uint32  `json:"blocked_by,omitempty"` // pg_blocking_pids(): the backends holding the locks it waits for
	Blocking      []uint32  `json:"blocking,omitempty"`   // the backends waiting for locks it holds
	// Culprits gives, for each PID of BlockedBy and Blocking that is a
	// connection checked out of the same pool, the line that checked it out.
	Culprits map[uint32]Frame `json:"culprits,omitempty"`
}

// String leads with the culprit: "connection checked out at
// app/handler.go:42 (app.getUser), held 7.2s". Without a culprit it says
// why there is none.
func (c Checkout) String() string {
	held := c.Held.Round(time.Millisecond)
	if c.Unseen {
		return fmt.Sprintf("connection handed out by database/sql's background opener with no driver call; holder unknown until its first statement; held at most %s", held)
	}
	if c.Culprit == (Frame{}) && c.NoCulprit != "" {
		return fmt.Sprintf("connection checked out at an unknown line, held %s (%s)", held, c.NoCulprit) + c.stuckVerdict()
	}
	if c.OnPurpose != "" {
		return fmt.Sprintf("connection checked out at %s, held %s: held on purpose (%s)", c.Culprit, held, c.OnPurpose)
	}
	s := fmt.Sprintf("connection checked out at %s, held %s", c.Culprit, held)
	if c.AskUnseen {
		s += " (its first use: database/sql's background opener handed it over, and no goroutine dump saw the line that asked for it)"
	}
	return s + c.stuckVerdict()
}

// Leak is one report about a checkout, given to [WithOnLeak]: a leak
// (LeakSuspected, LeakGarbageCollected, LeakStillOut), the follow-up of a suspected leak that came back
// ([Resolved]; Held is then the whole time it was out), or a [Deadlock].
type Leak struct {
	Kind Kind
	Checkout
	// Repeats counts reports of the same kind and culprit that were
	// suppressed since the previous report or summary line of that culprit
	// (see WithReportInterval).
	Repeats int
	// Earlier is the kind of the earlier report of the same checkout, for
	// a garbage-collected or still-out connection that was reported
	// before, and EarlierAt when it was detected; 0 if there was none.
	Earlier   Kind
	EarlierAt time.Time
	// WaitingAt is, for a Deadlock, the line where the goroutine that
	// holds the connection waits for another one.
	WaitingAt Frame
	// PoolDeadlocked is set on a Deadlock when every connection of the
	// full pool is held by a goroutine waiting for another: nothing can
	// return one.
	PoolDeadlocked bool
	// Notes says what the report could not see and why, e.g. "server
	// view unavailable: FATAL: sorry, too many clients already (SQLSTATE
	// 53300)".
	Notes []string
}

// String is the report's headline: its verdict clauses joined by "; ".
func (l Leak) String() string {
	return "pgxleak: " + strings.Join(l.verdict(), "; ")
}

// LeakError lists the connections still checked out; [Find] and [Drain]
// return it.
type LeakError struct {
	Checkouts []Checkout
	// Notes says what [WithTerminateStillOut] could not do, e.g. a backend the
	// server would not terminate, and why.
	Notes []string
	// Unlisted is how many more connections database/sql counted in use
	// (DBStats.InUse) than [Find] lists, when its wait ended: connections
	// being opened or closed, or checked out by the pool's own warm-up.
	// Find never reports success while database/sql counts a connection
	// in use. [Drain] leaves it 0: it lists every connection it waited for.
	Unlisted int
	cause    error
}

// Error is a summary: a headline, then one line per checkout with its
// culprit, how long it was held and the verdict on it, then the notes. The
// stacks stay on the values: e.Checkouts[i].Stack.
func (e *LeakError) Error() string {
	var b strings.Builder
	b.WriteString("pgxleak: " + numbered(len(e.Checkouts), "connection", "connections") + " still checked out")
	if e.cause != nil {
		fmt.Fprintf(&b, " (%v)", e.cause)
	}
	for _, c := range e.Checkouts {
		b.WriteString("\n  " + c.String())
	}
	if e.Unlisted > 0 {
		b.WriteString("\n  database/sql counts " + numbered(e.Unlisted, "more connection", "more connections") +
			" in use that no user code was seen to hold: being opened or closed, or the pool's own warm-up")
	}
	for _, n := range e.Notes {
		b.WriteString("\n  " + n)
	}
	return b.String()
}

// Unwrap returns the context error that ended the wait, if any.
func (e *LeakError) Unwrap() error { return e.cause }

// formatStack renders frames like a goroutine's stack in a panic.
func formatStack(fs []Frame) string {
	return stack.Format(toStackFrames(fs))
}

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
