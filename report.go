package pgxleak

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

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
type Checkout struct {
	Pool          string        `json:"pool"`                     // the pool's name
	Culprit       Frame         `json:"culprit"`                  // the first frame of the user's code; zero if no stack was recorded
	Stack         []Frame       `json:"stack,omitempty"`          // the checkout's stack, from database/sql's caller outwards
	CheckedOutAt  time.Time     `json:"checked_out_at"`           // when database/sql handed it out
	Held          time.Duration `json:"held_ns"`                  // how long it has been (or was) out
	BackendPID    uint32        `json:"backend_pid,omitempty"`    // the server process, for pg_stat_activity and pg_terminate_backend; 0 if unknown
	LastStatement string        `json:"last_statement,omitempty"` // the last statement run on it, without arguments; "" if none or WithoutStatements
	TxStatus      string        `json:"tx_status"`                // "idle", "in transaction", "in failed transaction" or "unknown"
	Suspected     bool          `json:"suspected"`                // already reported as held too long

	// Holder is the goroutine that checked the connection out, as a
	// goroutine dump saw it when the report was made or the pool
	// inspected; nil when unknown (Checkouts never takes a dump).
	Holder *Holder `json:"holder,omitempty"`
	// Server is what the server says of the connection's backend, read
	// when the report was made or the pool inspected; nil when unknown.
	Server *ServerActivity `json:"server,omitempty"`
}

// Holder is the goroutine that checked a connection out, joined from a
// goroutine dump with the goroutine identity recorded at the checkout.
type Holder struct {
	Goroutine uint64        `json:"goroutine"`       // the goroutine's ID; 0 if not known
	Exited    bool          `json:"exited"`          // the goroutine has exited: unless it handed its Rows, Tx or Conn to another goroutine, nothing can return the connection
	State     string        `json:"state,omitempty"` // as the runtime names it: "IO wait", "select", "chan receive", "sync.Mutex.Lock", "running", ...
	Waiting   time.Duration `json:"waiting_ns"`      // how long it has been in State, as the runtime reports it (whole minutes; 0 below one)
	At        Frame         `json:"at"`              // its innermost frame of user code now
	Stack     []Frame       `json:"stack,omitempty"` // its stack now, innermost first
	MatchedBy string        `json:"matched_by"`      // how the goroutine was found: "goroutine id", or a fallback named here
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
}

// String leads with the culprit: "connection checked out at
// app/handler.go:42 (app.getUser), held 7.2s".
func (c Checkout) String() string {
	return fmt.Sprintf("connection checked out at %s, held %s", c.Culprit, c.Held.Round(time.Millisecond))
}

// StackString renders Stack like a goroutine's stack in a panic.
func (c Checkout) StackString() string {
	return stack.Format(toStackFrames(c.Stack))
}

// LeakKind says why a [Leak] was reported.
type LeakKind int

const (
	// LeakSuspected: held longer than the leak threshold. Reported once per
	// checkout; if the connection comes back later, a follow-up with
	// Resolved set says after how long.
	LeakSuspected LeakKind = iota + 1
	// LeakGarbageCollected: a *sql.Rows was garbage-collected without being
	// closed. That connection is lost to the pool for good.
	LeakGarbageCollected
	// LeakStillOut: still checked out when the pool was drained or closed.
	LeakStillOut
)

// String returns "suspected", "garbage_collected" or "still_out", the
// values of the kind attribute in logs, spans and metrics.
func (k LeakKind) String() string {
	switch k {
	case LeakSuspected:
		return "suspected"
	case LeakGarbageCollected:
		return "garbage_collected"
	case LeakStillOut:
		return "still_out"
	}
	return fmt.Sprintf("LeakKind(%d)", int(k))
}

// Leak is one leak report.
type Leak struct {
	Kind LeakKind
	Checkout
	// Resolved marks the follow-up to a suspected leak whose connection came
	// back; Held is then the whole time it was out.
	Resolved bool
	// Repeats counts reports of the same kind and culprit that were
	// suppressed since the previous one (see WithReportInterval).
	Repeats int
}

// String is the report's headline.
func (l Leak) String() string {
	var b strings.Builder
	switch {
	case l.Resolved:
		fmt.Fprintf(&b, "pgxleak: connection returned after %s; it was reported as a suspected leak: checked out at %s",
			l.Held.Round(time.Millisecond), l.Culprit)
	case l.Kind == LeakSuspected:
		fmt.Fprintf(&b, "pgxleak: suspected leak: %s", l.Checkout)
	case l.Kind == LeakGarbageCollected:
		fmt.Fprintf(&b, "pgxleak: leaked connection: Rows garbage-collected without Close; %s; it never returns to the pool", l.Checkout)
	default:
		fmt.Fprintf(&b, "pgxleak: %s, still out when the pool was drained or closed", l.Checkout)
	}
	if l.Repeats > 0 {
		fmt.Fprintf(&b, " (+%d more like it)", l.Repeats)
	}
	return b.String()
}

// LeakError lists the connections still checked out; [Find] and [Drain]
// return it.
type LeakError struct {
	Checkouts []Checkout
	cause     error
}

// Error lists every checkout, each with its culprit, pool, backend PID,
// transaction status, last statement and stack.
func (e *LeakError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pgxleak: %d connection(s) still checked out", len(e.Checkouts))
	if e.cause != nil {
		fmt.Fprintf(&b, " (%v)", e.cause)
	}
	for _, c := range e.Checkouts {
		fmt.Fprintf(&b, "\n\n%s [pool %s", c, c.Pool)
		if c.BackendPID != 0 {
			fmt.Fprintf(&b, ", backend pid %d", c.BackendPID)
		}
		fmt.Fprintf(&b, ", %s", c.TxStatus)
		if c.LastStatement != "" {
			fmt.Fprintf(&b, ", last statement %q", c.LastStatement)
		}
		b.WriteString("]\n")
		b.WriteString(c.StackString())
	}
	return b.String()
}

// Unwrap returns the context error that ended the wait, if any.
func (e *LeakError) Unwrap() error { return e.cause }

// report is a leak waiting to be symbolised and emitted.
type report struct {
	kind     LeakKind
	resolved bool
	snap     snapshot
}

// describe symbolises a snapshot. It is only called to make a report or
// answer an inspection, never on the hot path.
func (p *tracker) describe(s snapshot) Checkout {
	frames := stack.Resolve(s.pcs)
	// Drop pgxleak's own frames at the top: the stack starts where
	// database/sql called in.
	for len(frames) > 0 && isLibrary(frames[0].Function, nil) &&
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
	}
	if i := culpritIndex(frames, p.cfg.libraryPrefix); i >= 0 {
		c.Culprit = Frame(frames[i])
	}
	return c
}

// maxStatement bounds the statement text in reports and spans: generated
// SQL can be megabytes long.
const maxStatement = 1024

func truncateStatement(s string) string {
	if len(s) <= maxStatement {
		return s
	}
	cut := maxStatement
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
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

// enqueue hands a report to the monitor goroutine. It is called on the
// return path and from cleanups, so it only appends and signals.
func (p *tracker) enqueue(r report) {
	p.queueMu.Lock()
	p.queue = append(p.queue, r)
	p.queueMu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *tracker) flush() {
	p.queueMu.Lock()
	q := p.queue
	p.queue = nil
	p.queueMu.Unlock()
	for _, r := range q {
		p.emit(r)
	}
}

type reportKey struct {
	kind     LeakKind
	resolved bool
	culprit  Frame
}

type reportRate struct {
	last       time.Time
	suppressed int
}

// emit symbolises, de-duplicates and delivers one report: to the OnLeak
// callback, the logger and the tracer.
func (p *tracker) emit(r report) {
	l := Leak{Kind: r.kind, Checkout: p.describe(r.snap), Resolved: r.resolved}
	p.recent.addLeak(l)
	p.tel.leak(l, r.snap)

	p.reportMu.Lock()
	key := reportKey{kind: l.Kind, resolved: l.Resolved, culprit: l.Culprit}
	rate := p.seen[key]
	now := time.Now()
	if l.Kind == LeakStillOut {
		// The final list at Drain or Close: nothing comes after it to
		// carry a count, so every one is delivered.
	} else if rate == nil {
		rate = &reportRate{}
		p.seen[key] = rate
	} else if now.Sub(rate.last) < p.cfg.reportInterval {
		rate.suppressed++
		p.reportMu.Unlock()
		return
	}
	if rate != nil {
		l.Repeats, rate.suppressed, rate.last = rate.suppressed, 0, now
	}
	p.reportMu.Unlock()

	lg := p.logger()
	level := slog.LevelWarn
	if l.Resolved {
		level = slog.LevelInfo
	}
	attrs := []slog.Attr{
		slog.String("kind", l.Kind.String()),
		slog.String("pool", l.Pool),
		slog.String("culprit", l.Culprit.String()),
		slog.Duration("held", l.Held),
		slog.Time("checked_out_at", l.CheckedOutAt),
		slog.String("tx_status", l.TxStatus),
	}
	if l.BackendPID != 0 {
		attrs = append(attrs, slog.Any("backend_pid", l.BackendPID))
	}
	if l.LastStatement != "" {
		attrs = append(attrs, slog.String("last_statement", l.LastStatement))
	}
	if l.Repeats > 0 {
		attrs = append(attrs, slog.Int("repeats", l.Repeats))
	}
	if !l.Resolved && len(l.Stack) > 0 {
		attrs = append(attrs, slog.String("stack", l.StackString()))
	}
	lg.LogAttrs(context.Background(), level, l.String(), attrs...)
	if p.cfg.onLeak != nil {
		p.cfg.onLeak(l) // after the log line, so a callback sees it written
	}
}

// scan reports connections held past the threshold, once per checkout.
func (p *tracker) scan() {
	limit := int64(p.cfg.leakThreshold)
	now := p.now()
	var found []snapshot
	p.each(func(c *connState) {
		if c.state == stateOut && !c.internal && !c.suspected && now-c.checkoutAt >= limit {
			c.suspected = true
			found = append(found, c.snapshotLocked(now))
		}
	})
	for _, s := range found {
		p.suspectedLeaks.Add(1)
		p.emit(report{kind: LeakSuspected, snap: s})
	}
}
