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
	Holder *Holder `json:"holder,omitempty"`
	// Server is what the server says of the connection's backend, read
	// when the report was made or the pool inspected; nil when unknown.
	Server *ServerActivity `json:"server,omitempty"`
	// Terminated says its backend was terminated ([Terminate],
	// [TerminateStillOut]): the server has ended its session; the
	// connection is discarded when it comes back.
	Terminated bool `json:"terminated,omitempty"`
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
	return fmt.Sprintf("connection checked out at %s, held %s", c.Culprit, held) + c.stuckVerdict()
}

// StackString renders Stack like a goroutine's stack in a panic.
func (c Checkout) StackString() string {
	return stack.Format(toStackFrames(c.Stack))
}

// LeakKind says why a [Leak] was reported.
type LeakKind int

const (
	// LeakSuspected: held longer than the leak threshold. Reported once per
	// checkout, and not for one already reported as garbage-collected; if
	// the connection comes back later, a follow-up with Resolved set says
	// after how long.
	LeakSuspected LeakKind = iota + 1
	// LeakGarbageCollected: a *sql.Rows was garbage-collected without being
	// closed. That connection is lost to the pool for good.
	LeakGarbageCollected
	// LeakStillOut: still checked out when the pool was drained or closed.
	// Reported once per pool, at the first Drain or at Close; Earlier links
	// it to the checkout's earlier report, if any.
	LeakStillOut
	// LeakDeadlock: a goroutine waits for a connection of the pool while
	// it holds one of the same pool (a nested query on a full pool).
	// Reported at ERROR within one wait-sampling interval, once per
	// checkout; WaitingAt is where it waits.
	LeakDeadlock
)

// String returns "suspected", "garbage_collected", "still_out" or
// "deadlock", the values of the kind attribute in logs, spans and metrics.
func (k LeakKind) String() string {
	switch k {
	case LeakSuspected:
		return "suspected"
	case LeakGarbageCollected:
		return "garbage_collected"
	case LeakStillOut:
		return "still_out"
	case LeakDeadlock:
		return "deadlock"
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
	// suppressed since the previous report or summary line of that culprit
	// (see WithReportInterval).
	Repeats int
	// Earlier is the earlier report of the same checkout, for a
	// garbage-collected or still-out connection that was reported before;
	// nil if there was none.
	Earlier *EarlierReport
	// WaitingAt is, for a LeakDeadlock, the line where the goroutine that
	// holds the connection waits for another one.
	WaitingAt Frame
	// PoolDeadlocked is set on a LeakDeadlock when every connection of the
	// full pool is held by a goroutine waiting for another: nothing can
	// return one.
	PoolDeadlocked bool
	// Notes says what the report could not see and why, e.g. "server
	// view unavailable: FATAL: sorry, too many clients already (SQLSTATE
	// 53300)".
	Notes []string
}

// EarlierReport is an earlier report of the same checkout.
type EarlierReport struct {
	Kind LeakKind
	At   time.Time // when it was detected
}

// String is the report's headline: its verdict clauses joined by "; ".
func (l Leak) String() string {
	return "pgxleak: " + strings.Join(l.verdict(), "; ")
}

// verdict returns the headline's clauses, most important first: what
// happened and where, then what else is known about it. New facts about a
// leak (its holder, the server's view) go in as further clauses.
func (l Leak) verdict() []string {
	var v []string
	switch {
	case l.Resolved:
		v = append(v, fmt.Sprintf("connection returned after %s", l.Held.Round(time.Millisecond)),
			fmt.Sprintf("it was reported as a suspected leak: checked out at %s", l.culpritOrReason()))
	case l.Kind == LeakSuspected:
		v = append(v, fmt.Sprintf("suspected leak: %s", l.Checkout))
	case l.Kind == LeakDeadlock:
		v = append(v, l.deadlockHeadline())
	case l.Kind == LeakGarbageCollected:
		v = append(v, "leaked connection: Rows garbage-collected without Close", l.Checkout.String(), "it never returns to the pool")
	default:
		v = append(v, fmt.Sprintf("%s, still out when the pool was drained or closed", l.Checkout))
	}
	if e := l.Earlier; e != nil {
		v = append(v, fmt.Sprintf("already reported as %s at %s", e.Kind.phrase(), e.At.Format(time.TimeOnly)))
	}
	if l.Repeats > 0 {
		v[0] += fmt.Sprintf(" (+%d more like it)", l.Repeats)
	}
	return v
}

func (c Checkout) culpritOrReason() string {
	if c.Culprit == (Frame{}) && c.NoCulprit != "" {
		return "an unknown line (" + c.NoCulprit + ")"
	}
	return c.Culprit.String()
}

// phrase names the kind in a sentence: "a suspected leak".
func (k LeakKind) phrase() string {
	switch k {
	case LeakSuspected:
		return "a suspected leak"
	case LeakGarbageCollected:
		return "a leaked connection (Rows garbage-collected)"
	case LeakStillOut:
		return "still out"
	case LeakDeadlock:
		return "a deadlock (held while waiting for another)"
	}
	return k.String()
}

// plural names n reports of the kind in a summary line: "2 more suspected
// leaks".
func (k LeakKind) plural(resolved bool) string {
	switch {
	case resolved:
		return "suspected leaks returned"
	case k == LeakSuspected:
		return "suspected leaks"
	case k == LeakGarbageCollected:
		return "leaked connections (Rows garbage-collected without Close)"
	case k == LeakStillOut:
		return "still-out connections (at Drain or Close)"
	case k == LeakDeadlock:
		return "deadlocks (a connection held while waiting for another)"
	}
	return k.String()
}

// LeakError lists the connections still checked out; [Find] and [Drain]
// return it.
type LeakError struct {
	Checkouts []Checkout
	// Notes says what [TerminateStillOut] could not do, e.g. a backend the
	// server would not terminate, and why.
	Notes []string
	// Unlisted is how many more connections database/sql counted in use
	// (DBStats.InUse) than are listed, when the wait ended: connections
	// being opened or closed, or checked out by the pool's own warm-up.
	// Find and Drain never report success while database/sql counts a
	// connection in use.
	Unlisted int
	cause    error
}

// Error lists every checkout, each with its culprit, pool, backend PID,
// transaction status, last statement and stack.
func (e *LeakError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pgxleak: %d connection(s) still checked out", len(e.Checkouts))
	if e.cause != nil {
		fmt.Fprintf(&b, " (%v)", e.cause)
	}
	for _, n := range e.Notes {
		fmt.Fprintf(&b, "\n%s", n)
	}
	if e.Unlisted > 0 {
		fmt.Fprintf(&b, "\n\ndatabase/sql counts %d more connection(s) in use that no user code was seen to hold: being opened or closed, or the pool's own warm-up",
			e.Unlisted)
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
	stuck    *stuckReport // a deadlock's holder and waiting line
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
func (p *pool) earlier(r report) *EarlierReport {
	s := r.snap
	switch {
	case r.kind == LeakStillOut && s.gcLeaked:
		return &EarlierReport{Kind: LeakGarbageCollected, At: p.epoch.Add(time.Duration(s.reportedAt[1])).Round(0)}
	case (r.kind == LeakStillOut || r.kind == LeakGarbageCollected) && s.suspected:
		return &EarlierReport{Kind: LeakSuspected, At: p.epoch.Add(time.Duration(s.reportedAt[0])).Round(0)}
	}
	return nil
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

// enqueue hands a report to the monitor goroutine, and reports whether it
// was taken: after the pool's final flush at Close nothing is reported
// (nor counted) any more, since the pool reported what was out then. It is
// called on the return path and from cleanups, so it only appends and
// signals.
func (t *tracker) enqueue(r report) bool {
	t.queueMu.Lock()
	if t.queueClosed {
		t.queueMu.Unlock()
		return false
	}
	t.queue = append(t.queue, r)
	t.queueMu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
	return true
}

// takeQueue returns the queued reports and empties the queue; closing it
// makes every later enqueue refuse.
func (t *tracker) takeQueue(closing bool) []report {
	t.queueMu.Lock()
	defer t.queueMu.Unlock()
	q := t.queue
	t.queue = nil
	if closing {
		t.queueClosed = true
	}
	return q
}

func (p *pool) flush() {
	for _, r := range p.tracker.takeQueue(false) {
		p.emit(r)
	}
}

// flushFinal emits what is queued, closes the queue, and writes the
// summary lines of every report still suppressed: nothing comes after it.
func (p *pool) flushFinal() {
	for _, r := range p.tracker.takeQueue(true) {
		p.emit(r)
	}
	p.summarize(true)
}

// emit symbolises, de-duplicates and delivers one report: to the tracer,
// the logger and the OnLeak callback.
func (p *pool) emit(r report) {
	l := Leak{Kind: r.kind, Checkout: p.describe(r.snap), Resolved: r.resolved, Earlier: p.earlier(r)}
	p.annotate(&l, r)
	p.monitor.recent.addLeak(l)
	p.tel.leak(l, r.snap)
	if !p.admit(&l) {
		return
	}
	lg := p.logger()
	level := slog.LevelWarn
	if l.Resolved {
		level = slog.LevelInfo
	}
	if l.Kind == LeakDeadlock {
		level = slog.LevelError
	}
	ctx := context.Background()
	lg.LogAttrs(ctx, level, l.String(), p.logAttrs(l, lg.Enabled(ctx, slog.LevelDebug))...)
	p.deliver(l) // after the log line, so a callback sees it written
}

// logAttrs are a report's attributes in the log: short by default (the
// headline carries the culprit); the stack and the checkout time only when
// the logger is enabled at DEBUG. The full report is in the Leak given to
// WithOnLeak and in the leak span.
func (p *pool) logAttrs(l Leak, debug bool) []slog.Attr {
	attrs := []slog.Attr{
		slog.String("kind", l.Kind.String()),
		slog.String("pool", l.Pool),
		slog.Duration("held", l.Held),
		slog.String("tx_status", l.TxStatus),
	}
	if l.BackendPID != 0 {
		attrs = append(attrs, slog.Any("backend_pid", l.BackendPID))
	}
	if st := l.LastStatement; st != "" {
		if !debug {
			st = shorten(st, maxLogStatement)
		}
		attrs = append(attrs, slog.String("last_statement", st))
	}
	if l.Repeats > 0 {
		attrs = append(attrs, slog.Int("repeats", l.Repeats))
	}
	attrs = append(attrs, stuckAttrs(l)...)
	if callers := p.callers(l.Stack); callers != "" && !l.Resolved {
		attrs = append(attrs, slog.String("callers", callers))
	}
	if debug {
		attrs = append(attrs, slog.Time("checked_out_at", l.CheckedOutAt))
		if len(l.Stack) > 0 {
			attrs = append(attrs, slog.String("stack", l.StackString()))
		}
	}
	return attrs
}

// maxLogStatement bounds the statement in a default log line; the Leak
// carries it whole (up to maxStatement).
const maxLogStatement = 120

// maxCallers bounds the frames of the application a log line lists.
const maxCallers = 4

// callers lists the application's frames of a stack after the culprit,
// innermost first: "app/handler.go:20 (app.serve) < main.go:31
// (main.main)". Library, standard-library, runtime and test-runner frames
// are left out.
func (p *pool) callers(fs []Frame) string {
	var out []string
	first := true
	for _, f := range fs {
		if sf := stack.Frame(f); !isUserFrame(sf, p.cfg.libraryPrefix) || isStdlib(sf) {
			continue
		}
		if first { // the culprit, already in the headline
			first = false
			continue
		}
		if len(out) == maxCallers {
			out = append(out, "…")
			break
		}
		out = append(out, f.String())
	}
	return strings.Join(out, " < ")
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

// scan reports connections held past the threshold, once per checkout. A
// connection already reported as garbage-collected is not reported again.
func (p *pool) scan() {
	limit := int64(p.cfg.leakThreshold)
	now := p.now()
	var found []snapshot
	p.tracker.each(func(c *connState) {
		if c.state == stateOut && !c.internal && !c.suspected && !c.gcLeaked && now-c.checkoutAt >= limit {
			c.suspected, c.reportedAt[0] = true, now
			found = append(found, c.snapshotLocked(now))
		}
	})
	for _, s := range found {
		p.tracker.suspectedLeaks.Add(1)
		p.emit(report{kind: LeakSuspected, snap: s})
	}
}
