package pgxleak

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/pgxleak/pgxleak/internal/stack"
)

// DefaultLeakThreshold is how long a connection may stay checked out before
// it is reported as a suspected leak: 30 seconds, longer than the request
// timeouts of most services, so a report means a connection outlived the
// request that took it. Batch jobs that legitimately hold a connection for
// minutes should raise it; a false positive explains itself with a
// "returned after" follow-up.
const DefaultLeakThreshold = 30 * time.Second

// DefaultStackDepth is the number of program counters recorded per checkout.
const DefaultStackDepth = 32

// ErrDraining is returned for new checkouts while [Drain] runs.
var ErrDraining = errors.New("pgxleak: pool is draining; no new connections are handed out")

// WithLeakThreshold reports a connection held longer than d as a suspected
// leak, once per checkout; 0 disables the check. Default:
// [DefaultLeakThreshold].
func WithLeakThreshold(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d < 0 {
			c.invalid("WithLeakThreshold", d, "must not be negative")
			return
		}
		c.leakThreshold = d
	})
}

// WithOnLeak calls f with every leak report (after de-duplication), on the
// pool's monitor goroutine. f must not block for long.
func WithOnLeak(f func(Leak)) Option {
	return optionFunc(func(c *config) { c.onLeak = f })
}

// WithLogger sends leak reports to l: suspected, garbage-collected and
// still-out leaks at WARN, "returned after" follow-ups at INFO. A nil l
// turns logging off. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) { c.logger, c.loggerSet = l, true })
}

// WithStackDepth sets how many frames each checkout records; 0 turns stack
// capture off (checkouts are still tracked and counted, but reports have no
// culprit). Default: [DefaultStackDepth].
func WithStackDepth(n int) Option {
	return optionFunc(func(c *config) {
		if n < 0 || n > 256 {
			c.invalid("WithStackDepth", n, "must be between 0 and 256")
			return
		}
		c.stackDepth = n
	})
}

// WithStackSampling records the stack on one checkout in every n of each
// connection; the others are tracked and counted without a culprit. 1
// records every checkout. Default: 1.
func WithStackSampling(n int) Option {
	return optionFunc(func(c *config) {
		if n < 1 {
			c.invalid("WithStackSampling", n, "must be at least 1")
			return
		}
		c.sampleEvery = int64(n)
	})
}

// WithLibraryPrefixes adds function-name prefixes (for example
// "github.com/acme/dbutil.") that are skipped when picking the culprit, for
// in-house wrappers around database/sql.
func WithLibraryPrefixes(prefixes ...string) Option {
	return optionFunc(func(c *config) { c.libraryPrefix = append(c.libraryPrefix, prefixes...) })
}

// WithReportInterval sets how often the same culprit may be reported for
// the same kind of leak; reports in between are counted and the count is
// carried by the next one ([Leak.Repeats]). Default: one minute.
func WithReportInterval(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d < 0 {
			c.invalid("WithReportInterval", d, "must not be negative")
			return
		}
		c.reportInterval = d
	})
}

// WithoutStatements keeps statement text out of reports, spans and
// [Checkouts] entirely. Statement text never includes bound arguments.
func WithoutStatements() Option {
	return optionFunc(func(c *config) { c.statements = false })
}

// WithoutGCDetection turns off the detection of Rows dropped without Close,
// which costs one runtime.AddCleanup per query on a context that cannot be
// cancelled.
func WithoutGCDetection() Option {
	return optionFunc(func(c *config) { c.gcDetection = false })
}

// Frame is a resolved stack frame.
type Frame struct {
	Function string // fully qualified: "github.com/acme/app.(*Server).getUser"
	File     string // absolute path
	Line     int
}

// String returns "dir/file.go:42 (pkg.func)", or a note that no stack was
// recorded.
func (f Frame) String() string { return stack.Frame(f).Location() }

// Checkout describes a connection that is checked out.
type Checkout struct {
	Pool          string        // the pool's name
	Culprit       Frame         // the first frame of the user's code; zero if no stack was recorded
	Stack         []Frame       // the checkout's stack, from database/sql's caller outwards
	CheckedOutAt  time.Time     // when database/sql handed it out
	Held          time.Duration // how long it has been (or was) out
	BackendPID    uint32        // the server process, for pg_stat_activity and pg_terminate_backend; 0 if unknown
	LastStatement string        // the last statement run on it, without arguments; "" if none or WithoutStatements
	TxStatus      string        // "idle", "in transaction", "in failed transaction" or "unknown"
	Suspected     bool          // already reported as held too long
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

// PoolStats is the tracker's counters next to database/sql's.
type PoolStats struct {
	sql.DBStats
	Checkouts        uint64 // checkouts seen by the tracker (the pool's own warm-ups excluded)
	Returns          uint64 // returns matched to a checkout
	CheckedOut       int    // checked out now by users, by the tracker's count (DBStats.InUse also counts the pool's own warm-ups)
	Suspected        uint64 // suspected leaks reported
	Resolved         uint64 // suspected leaks that came back
	GarbageCollected uint64 // Rows garbage-collected without Close
	StillOut         uint64 // connections still out at Drain or Close
}

// Checkouts returns every connection checked out of db right now, oldest
// first. It returns nil for a *sql.DB not opened through pgxleak.
func Checkouts(db *sql.DB) []Checkout {
	p := poolOf(db)
	if p == nil {
		return nil
	}
	return p.checkouts()
}

// Stats returns db.Stats() with the tracker's counters. For a *sql.DB not
// opened through pgxleak only DBStats is filled.
func Stats(db *sql.DB) PoolStats {
	var s PoolStats
	if db == nil {
		return s
	}
	s.DBStats = db.Stats()
	if p := poolOf(db); p != nil {
		p.fillStats(&s)
	}
	return s
}

// Drain stops new checkouts from db and waits until every checked-out
// connection has come back, or ctx ends. It then closes db. If connections
// were still out, it reports each as a [LeakStillOut] leak and returns a
// *[LeakError] listing them with their culprits; those connections are not
// forcibly closed, since their goroutines may still be using them, and
// database/sql closes each when it is returned.
func Drain(ctx context.Context, db *sql.DB) error {
	p := poolOf(db)
	if p == nil {
		return errNotTracked
	}
	p.draining.Store(true)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var cause error
	for (p.returnable() > 0 || p.handingOut.Load() > 0) && cause == nil {
		select {
		case <-ctx.Done():
			cause = ctx.Err()
		case <-tick.C:
		}
	}
	out := p.stillOut() // reports them and keeps Close from reporting them again
	err := db.Close()
	if len(out) > 0 {
		return &LeakError{Checkouts: out, cause: cause}
	}
	return err
}

// connection states
const (
	stateIdle uint8 = iota
	stateOut
	stateClosed
)

// transaction states, as PostgreSQL's ReadyForQuery reports them
const (
	txUnknown       byte = 0
	txIdle          byte = 'I'
	txInTransaction byte = 'T'
	txFailed        byte = 'E'
)

func txStatusString(b byte) string {
	switch b {
	case txIdle:
		return "idle"
	case txInTransaction:
		return "in transaction"
	case txFailed:
		return "in failed transaction"
	}
	return "unknown"
}

// connState is the tracker's record of one connection. Fields above mu are
// set once when the connection opens; mu guards the rest. database/sql uses
// a connection from one goroutine at a time, so mu is uncontended except
// when the monitor or an inspection reads it.
type connState struct {
	pool      *pool
	pgx       *pgx.Conn // nil unless the wrapped conn is pgx's
	pid       uint32
	expiresAt int64 // jittered end of life, in pool time; 0 means never

	mu         sync.Mutex
	state      uint8
	internal   bool            // checked out by the pool itself (warm-up)
	checkoutAt int64           // pool time
	ctx        context.Context // the checkout's context, for trace links; nil once returned
	pcs        []uintptr       // capture buffer, allocated once per connection
	npcs       int
	statement  string
	txStatus   byte
	suspected  bool
	gcLeaked   bool
	broken     bool  // a transaction ended in an unknown state; discard at return
	uses       int64 // user checkouts, for WithMaxUses and sampling
	checkouts  uint64
	returns    uint64

	// watch is the connection's garbage-collection watch while no Rows
	// holds it (see gcWatch). Like the owner-only fields below, it is used
	// only inside driver calls on this connection, which database/sql
	// serialises, and needs no lock.
	watch *gcWatch
}

// Owner-only fields. state, statement, txStatus and checkouts are written
// only by driver calls on the connection (checkout, use, return), under mu,
// and database/sql makes those calls one at a time, with happens-before
// edges between the goroutines that make them. Those calls may therefore
// read these fields without mu: only the monitor and inspections read
// them from other goroutines, under mu, and they never write them. That
// lets the per-operation path (use, afterStatement) skip the lock when
// nothing changes.

// checkoutLocked records a checkout. It is the hot path: no allocation, no
// symbolising; the stack goes into the connection's own buffer.
func (c *connState) checkoutLocked(ctx context.Context) {
	c.checkoutAtLocked(ctx, c.pool.now())
}

// checkoutAtLocked is checkoutLocked with the pool time already read (a
// clock read costs as much as the rest of the checkout).
func (c *connState) checkoutAtLocked(ctx context.Context, now int64) {
	p := c.pool
	c.state = stateOut
	c.checkoutAt = now
	c.ctx = ctx
	_, c.internal = ctx.(*internalContext)
	c.suspected, c.gcLeaked, c.statement = false, false, ""
	c.npcs = 0
	if c.internal {
		return
	}
	c.uses++
	c.checkouts++
	if len(c.pcs) > 0 && (p.cfg.sampleEvery == 1 || c.uses%p.cfg.sampleEvery == 1) {
		c.npcs = stack.Capture(1, c.pcs)
	}
}

// use is called at the start of every operation on the connection. An
// operation on a connection the tracker holds as idle is a checkout that
// made no earlier driver call: a connection database/sql's background
// opener handed to a waiting goroutine, or one that was returned without a
// session reset.
func (c *connState) use(ctx context.Context, query string) error {
	// The common case: checked out already, and the statement is the one
	// recorded (or none is recorded). Owner-only fields, read without mu.
	if c.state == stateOut && (query == "" || !c.pool.cfg.statements || c.statement == query) {
		return nil
	}
	c.mu.Lock()
	if c.state == stateIdle {
		if c.pool.draining.Load() {
			c.mu.Unlock()
			return ErrDraining
		}
		c.checkoutLocked(ctx)
	}
	if query != "" && c.pool.cfg.statements {
		c.statement = query
	}
	c.mu.Unlock()
	return nil
}

// checkin records a return through IsValid and reports whether the
// connection has reached its end of life (maximum uses or jittered
// lifetime) and must be discarded.
func (c *connState) checkin() (discard bool) {
	p := c.pool
	now := p.now()
	c.mu.Lock()
	if c.state == stateOut {
		c.returnLocked(now)
	}
	discard = c.broken ||
		p.cfg.maxUses > 0 && c.uses >= p.cfg.maxUses ||
		c.expiresAt != 0 && now >= c.expiresAt
	c.mu.Unlock()
	return discard
}

func (c *connState) returnLocked(now int64) {
	c.state = stateIdle
	if !c.internal {
		c.returns++
		held := now - c.checkoutAt
		c.pool.observeUse(held)
		if c.suspected {
			s := c.snapshotLocked(now)
			c.pool.resolvedLeaks.Add(1)
			c.pool.enqueue(report{kind: LeakSuspected, resolved: true, snap: s})
		}
	}
	c.ctx = nil
}

// reusableAt reports whether an idle connection may be checked out again
// at pool time now: not while draining, not past its jittered lifetime.
func (c *connState) reusableAt(now int64) bool {
	return !c.pool.draining.Load() && (c.expiresAt == 0 || now < c.expiresAt)
}

// afterStatement refreshes the transaction status from pgx, on the
// goroutine that ran the statement.
func (c *connState) afterStatement() {
	if c.pgx != nil {
		c.setTxStatus(txUnknown) // pgx's own status replaces it
	}
}

// afterTx records the end of a transaction. pgx reports its true state,
// which IsValid checks; for another driver a failed Commit or Rollback
// leaves the session's state unknown, so the connection is discarded at
// its return rather than handed to the next caller mid-transaction.
func (c *connState) afterTx(err error) {
	if c.pgx != nil {
		c.afterStatement()
		return
	}
	c.mu.Lock()
	c.txStatus = txIdle
	if err != nil {
		c.txStatus, c.broken = txUnknown, true
	}
	c.mu.Unlock()
}

// setTxStatus records the transaction status st, or pgx's own status when
// the driver is pgx. It runs on the goroutine using the connection.
func (c *connState) setTxStatus(st byte) {
	if c.pgx != nil {
		st = c.pgx.PgConn().TxStatus()
	}
	if st == c.txStatus { // owner-only field: no lock to read it
		return
	}
	c.mu.Lock()
	c.txStatus = st
	c.mu.Unlock()
}

// gcToken identifies the current checkout for a Rows cleanup. It must not
// reference the Rows.
type gcToken struct {
	c   *connState
	seq uint64
}

func (c *connState) gcToken() gcToken {
	return gcToken{c, c.checkouts} // owner-only field: no lock to read it
}

// gcWatch detects a Rows dropped without Close, with no allocation and no
// cleanup registration per query. Each connection has one watch, made
// (with its cleanup) the first time it is needed. wrapRows lends it to the
// wrapper of a Rows read on a context that cannot be cancelled, and the
// wrapper's Close gives it back. While lent, the wrapper holds the only
// reference to it, and database/sql's *sql.Rows the only reference to the
// wrapper; if that *sql.Rows is garbage-collected without Close, so is the
// watch, and its cleanup reports the leak. A second Rows open on the same
// connection at the same time gets a watch of its own.
type gcWatch struct {
	w *gcWatchState
}

// gcWatchState is the cleanup's argument; it must not reach the watch.
// seq is written by the owner only; the runtime orders a cleanup after the
// writes to its argument that preceded the collection (and tells the race
// detector so), so it needs no atomic.
type gcWatchState struct {
	c   *connState
	seq uint64 // the checkout being watched; 0 while not lent
}

// lendWatch returns the connection's watch, marked with the current
// checkout, for a Rows wrapper to hold. Owner-only.
func (c *connState) lendWatch() *gcWatch {
	w := c.watch
	if w == nil {
		st := &gcWatchState{c: c}
		w = &gcWatch{w: st}
		runtime.AddCleanup(w, watchCollected, st)
	} else {
		c.watch = nil
	}
	w.w.seq = c.checkouts
	return w
}

// returnWatch takes back a watch lent by lendWatch. Owner-only.
func (c *connState) returnWatch(w *gcWatch) {
	w.w.seq = 0
	if c.state != stateClosed { // a closed connection must not keep it (see closeConn)
		c.watch = w
	}
}

// watchCollected runs on the runtime's cleanup goroutine when a watch was
// garbage-collected: while lent, that means its Rows was dropped without
// Close; otherwise the connection is gone and it means nothing.
func watchCollected(st *gcWatchState) {
	if seq := st.seq; seq != 0 {
		rowsCollected(gcToken{st.c, seq})
	}
}

// rowsCollected runs on the runtime's cleanup goroutine when a watched Rows
// was garbage-collected without Close.
func rowsCollected(t gcToken) {
	c := t.c
	c.mu.Lock()
	if c.state != stateOut || c.checkouts != t.seq || c.gcLeaked {
		c.mu.Unlock()
		return
	}
	c.gcLeaked = true
	s := c.snapshotLocked(c.pool.now())
	c.mu.Unlock()
	c.pool.gcLeaks.Add(1)
	c.pool.enqueue(report{kind: LeakGarbageCollected, snap: s})
}

// snapshot is an unsymbolised copy of a checkout, taken under the
// connection's lock; symbolising happens later, off the hot path.
type snapshot struct {
	pcs        []uintptr
	checkoutAt int64
	held       int64
	pid        uint32
	statement  string
	txStatus   byte
	suspected  bool
	ctx        context.Context
	conn       *connState // which connection, for telemetry to match a leak with its return
}

func (c *connState) snapshotLocked(now int64) snapshot {
	return snapshot{
		pcs:        slices.Clone(c.pcs[:c.npcs]),
		checkoutAt: c.checkoutAt,
		held:       now - c.checkoutAt,
		pid:        c.pid,
		statement:  c.statement,
		txStatus:   c.txStatus,
		suspected:  c.suspected,
		ctx:        c.ctx,
		conn:       c,
	}
}

// report is a leak waiting to be symbolised and emitted.
type report struct {
	kind     LeakKind
	resolved bool
	snap     snapshot
}

// pool is the state of one *sql.DB opened through pgxleak.
type pool struct {
	cfg         *config
	db          *sql.DB // nil when opened by sql.Open("pgxleak", ...)
	epoch       time.Time
	draining    atomic.Bool
	handingOut  atomic.Int64 // Connect calls under way; Drain waits for them (ResetSession: see there)
	keeping     atomic.Bool  // a keepMinIdle runs
	background  sync.WaitGroup
	internalCtx context.Context
	cancel      context.CancelFunc
	tel         *telemetry

	mu             sync.Mutex
	conns          map[*connState]struct{}
	poolName       string
	closedCounts   [2]uint64 // checkouts, returns of connections already closed
	closed         bool
	started        bool // the monitor goroutine runs
	stillOutIssued bool // Drain reported the leftovers already

	suspectedLeaks atomic.Uint64
	resolvedLeaks  atomic.Uint64
	gcLeaks        atomic.Uint64
	stillOutLeaks  atomic.Uint64

	queueMu sync.Mutex
	queue   []report
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}

	reportMu sync.Mutex
	seen     map[reportKey]*reportRate
}

func newPool(cfg *config, defaultName string) *pool {
	name := cfg.poolName
	if name == "" {
		name = defaultName
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &pool{
		cfg:         cfg,
		epoch:       time.Now(),
		internalCtx: ctx,
		cancel:      cancel,
		conns:       make(map[*connState]struct{}),
		poolName:    name,
		wake:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		seen:        make(map[reportKey]*reportRate),
	}
	p.tel = newTelemetry(p)
	return p
}

// now is the pool's monotonic clock, in nanoseconds since the pool opened.
func (p *pool) now() int64 { return int64(time.Since(p.epoch)) }

func (p *pool) name() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.poolName
}

// logger returns the pool's logger; WithLogger(nil) discards.
func (p *pool) logger() *slog.Logger {
	if !p.cfg.loggerSet {
		return slog.Default()
	}
	if p.cfg.logger == nil {
		return discardLogger
	}
	return p.cfg.logger
}

var discardLogger = slog.New(slog.DiscardHandler)

// newConn registers a freshly connected driver connection.
func (p *pool) newConn(inner driver.Conn) *conn {
	c := &conn{connState: connState{pool: p, txStatus: txIdle}, inner: inner}
	if sc, ok := inner.(*stdlib.Conn); ok {
		c.pgx = sc.Conn()
		c.pid = c.pgx.PgConn().PID()
	}
	if p.cfg.stackDepth > 0 {
		c.pcs = make([]uintptr, p.cfg.stackDepth)
	}
	if lt := p.cfg.maxLifetime; lt > 0 {
		life := lt
		if j := p.cfg.lifetimeJitter; j > 0 {
			life -= rand.N(j)
		}
		c.expiresAt = p.now() + int64(life)
	}
	c.wrapper = connWrappers[connMask(inner)](c)
	p.mu.Lock()
	p.conns[&c.connState] = struct{}{}
	if p.poolName == "" && c.pgx != nil {
		cfg := c.pgx.Config()
		p.poolName = fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
	}
	p.mu.Unlock()
	return c
}

// closeConn records that database/sql closed a connection; if it was out,
// this is its return.
func (p *pool) closeConn(c *connState) {
	now := p.now()
	p.mu.Lock()
	c.mu.Lock()
	if c.state == stateOut {
		c.returnLocked(now)
	}
	if c.state != stateClosed {
		c.state = stateClosed
		c.watch = nil // its cleanup's argument reaches c, and c reached it
		p.closedCounts[0] += c.checkouts
		p.closedCounts[1] += c.returns
		delete(p.conns, c)
	}
	c.mu.Unlock()
	p.mu.Unlock()
}

// each calls f for every open connection, under p.mu and the connection's
// lock, in no particular order.
func (p *pool) each(f func(c *connState)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.mu.Lock()
		f(c)
		c.mu.Unlock()
	}
}

// returnable counts the connections out that may still come back: a
// connection whose Rows was garbage-collected never will.
func (p *pool) returnable() (n int) {
	p.each(func(c *connState) {
		if c.state == stateOut && !c.internal && !c.gcLeaked {
			n++
		}
	})
	return n
}

func (p *pool) outSnapshots() []snapshot {
	now := p.now()
	var out []snapshot
	p.each(func(c *connState) {
		if c.state == stateOut && !c.internal {
			out = append(out, c.snapshotLocked(now))
		}
	})
	slices.SortFunc(out, func(a, b snapshot) int { return cmp.Compare(a.checkoutAt, b.checkoutAt) })
	return out
}

func (p *pool) checkouts() []Checkout {
	snaps := p.outSnapshots()
	out := make([]Checkout, len(snaps))
	for i, s := range snaps {
		out[i] = p.describe(s)
	}
	return out
}

func (p *pool) fillStats(s *PoolStats) {
	p.mu.Lock()
	s.Checkouts, s.Returns = p.closedCounts[0], p.closedCounts[1]
	for c := range p.conns {
		c.mu.Lock()
		s.Checkouts += c.checkouts
		s.Returns += c.returns
		if c.state == stateOut && !c.internal {
			s.CheckedOut++
		}
		c.mu.Unlock()
	}
	p.mu.Unlock()
	s.Suspected = p.suspectedLeaks.Load()
	s.Resolved = p.resolvedLeaks.Load()
	s.GarbageCollected = p.gcLeaks.Load()
	s.StillOut = p.stillOutLeaks.Load()
}

// stillOut reports every connection still out as LeakStillOut, once per
// pool, and returns them.
func (p *pool) stillOut() []Checkout {
	p.mu.Lock()
	issued := p.stillOutIssued
	p.stillOutIssued = true
	p.mu.Unlock()
	if issued {
		return nil
	}
	snaps := p.outSnapshots()
	out := make([]Checkout, len(snaps))
	for i, s := range snaps {
		out[i] = p.describe(s)
		p.stillOutLeaks.Add(1)
		p.enqueue(report{kind: LeakStillOut, snap: s}) // emitted by the monitor before close returns
	}
	return out
}

// describe symbolises a snapshot. It is only called to make a report or
// answer an inspection, never on the hot path.
func (p *pool) describe(s snapshot) Checkout {
	frames := stack.Resolve(s.pcs)
	// Drop pgxleak's own frames at the top: the stack starts where
	// database/sql called in.
	for len(frames) > 0 && stack.IsLibrary(frames[0].Function, nil) &&
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
	if i := stack.Culprit(frames, p.cfg.libraryPrefix); i >= 0 {
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
func (p *pool) enqueue(r report) {
	p.queueMu.Lock()
	p.queue = append(p.queue, r)
	p.queueMu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *pool) flush() {
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
func (p *pool) emit(r report) {
	l := Leak{Kind: r.kind, Checkout: p.describe(r.snap), Resolved: r.resolved}
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
func (p *pool) scan() {
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

// start registers the pool for VerifyTestMain and starts its monitor.
func (p *pool) start() {
	p.mu.Lock()
	p.started = true
	p.mu.Unlock()
	openPools.add(p)
	go p.run()
}

// run is the pool's monitor goroutine: it symbolises and emits reports,
// scans for connections held too long, keeps the minimum of idle
// connections and samples wait statistics.
func (p *pool) run() {
	defer close(p.done)
	var scan, keep, waits <-chan time.Time
	if t := p.cfg.leakThreshold; t > 0 {
		tk := time.NewTicker(min(max(t/4, 5*time.Millisecond), time.Second))
		defer tk.Stop()
		scan = tk.C
	}
	if p.cfg.minIdle > 0 && p.db != nil {
		tk := time.NewTicker(p.cfg.keepIdleEvery)
		defer tk.Stop()
		keep = tk.C
	}
	if p.db != nil {
		p.tel.startWaitSampling()
		tk := time.NewTicker(p.cfg.waitInterval)
		defer tk.Stop()
		waits = tk.C
	}
	for {
		select {
		case <-p.stop:
			p.flush()
			return
		case <-p.wake:
			p.flush()
		case <-scan:
			p.scan()
		case <-keep:
			// On its own goroutine, so that scans and reports never wait
			// behind a slow connect; one at a time.
			if p.keeping.CompareAndSwap(false, true) {
				p.background.Go(func() {
					defer p.keeping.Store(false)
					p.keepMinIdle(p.internalCtx)
				})
			}
		case <-waits:
			p.tel.sampleWaitStats()
		}
	}
}

// close runs when the *sql.DB is closed, after database/sql closed the idle
// connections: what is still out now is reported as LeakStillOut.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	started := p.started
	p.mu.Unlock()
	p.cancel() // stops the keeper's checkouts
	p.stillOut()
	if started {
		close(p.stop)
		<-p.done // the monitor flushes the queue before it exits
	} else {
		p.flush()
	}
	p.background.Wait()
	p.tel.close()
	openPools.remove(p)
}

// openPools is the list of pools that VerifyTestMain checks.
var openPools = &poolRegistry{pools: make(map[*pool]struct{})}

type poolRegistry struct {
	mu    sync.Mutex
	pools map[*pool]struct{}
}

func (r *poolRegistry) add(p *pool) {
	r.mu.Lock()
	r.pools[p] = struct{}{}
	r.mu.Unlock()
}

func (r *poolRegistry) remove(p *pool) {
	r.mu.Lock()
	delete(r.pools, p)
	r.mu.Unlock()
}

func (r *poolRegistry) list() []*pool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := make([]*pool, 0, len(r.pools))
	for p := range r.pools {
		ps = append(ps, p)
	}
	return ps
}

// Seams for testing VerifyTestMain without exiting.
var (
	osExit             = os.Exit
	osStderr io.Writer = os.Stderr
)

// A VerifyOption configures [Find], [VerifyNone] and [VerifyTestMain].
type VerifyOption interface {
	applyVerify(*verifyConfig)
}

type verifyOptionFunc func(*verifyConfig)

func (f verifyOptionFunc) applyVerify(c *verifyConfig) { f(c) }

type verifyConfig struct {
	grace  time.Duration
	ignore []string
}

// DefaultGracePeriod is how long [Find] waits for connections to come back
// before it reports them: database/sql closes Rows and rolls back Tx on
// another goroutine when their context (say t.Context()) ends.
const DefaultGracePeriod = time.Second

// GracePeriod sets how long Find polls for checked-out connections to come
// back before reporting them. Default: [DefaultGracePeriod].
func GracePeriod(d time.Duration) VerifyOption {
	return verifyOptionFunc(func(c *verifyConfig) { c.grace = max(d, 0) })
}

// IgnoreFunction ignores checkouts with a frame of the fully qualified
// function fn anywhere in their stack (not only as the culprit), e.g.
// "github.com/acme/app.(*Cache).warm", for a connection that is meant to
// outlive the test.
func IgnoreFunction(fn string) VerifyOption {
	return verifyOptionFunc(func(c *verifyConfig) { c.ignore = append(c.ignore, fn) })
}

func newVerifyConfig(opts []VerifyOption) *verifyConfig {
	c := &verifyConfig{grace: DefaultGracePeriod}
	for _, o := range opts {
		if o != nil {
			o.applyVerify(c)
		}
	}
	return c
}

func (c *verifyConfig) ignored(co Checkout) bool {
	for _, f := range co.Stack {
		if slices.Contains(c.ignore, f.Function) {
			return true
		}
	}
	return false
}

// Find returns nil when no connection is checked out of db, waiting up to
// the grace period for connections on their way back. Otherwise it returns
// a *[LeakError] listing each with its culprit, stack and held time.
func Find(db *sql.DB, opts ...VerifyOption) error {
	p := poolOf(db)
	if p == nil {
		return errNotTracked
	}
	return findIn([]*pool{p}, newVerifyConfig(opts))
}

func findIn(pools []*pool, cfg *verifyConfig) error {
	deadline := time.Now().Add(cfg.grace)
	for {
		var out []Checkout
		for _, p := range pools {
			for _, c := range p.checkouts() {
				if !cfg.ignored(c) {
					out = append(out, c)
				}
			}
		}
		if len(out) == 0 {
			return nil
		}
		if !time.Now().Before(deadline) {
			return &LeakError{Checkouts: out}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestingT is the part of *testing.T that VerifyNone uses.
type TestingT interface {
	Error(args ...any)
}

// TestingM is the part of *testing.M that VerifyTestMain uses.
type TestingM interface {
	Run() int
}

// VerifyNone fails the test if any connection is still checked out of db
// after the grace period, listing each with its culprit, stack and held
// time. Call it from t.Cleanup, which runs after t.Context() is cancelled,
// so that Rows and Tx on that context have been given back:
//
//	db, _ := pgxleak.Open("pgx", dsn)
//	t.Cleanup(func() { pgxleak.VerifyNone(t, db); db.Close() })
func VerifyNone(t TestingT, db *sql.DB, opts ...VerifyOption) {
	if h, ok := t.(interface{ Helper() }); ok {
		h.Helper()
	}
	if err := Find(db, opts...); err != nil {
		t.Error(err)
	}
}

// VerifyTestMain runs the tests and, if they passed, checks every pool
// opened through pgxleak that is still open, failing the run (exit code 1)
// if any connection is still checked out after the grace period. Pools
// closed during the tests reported their leftovers when they were closed
// (see [LeakStillOut]). Use it in TestMain:
//
//	func TestMain(m *testing.M) { pgxleak.VerifyTestMain(m) }
func VerifyTestMain(m TestingM, opts ...VerifyOption) {
	cfg := newVerifyConfig(opts)
	code := m.Run()
	if code == 0 {
		if err := findIn(openPools.list(), cfg); err != nil {
			fmt.Fprintln(osStderr, "pgxleak: connections left checked out after the tests passed:\n"+err.Error())
			code = 1
		}
	}
	osExit(code)
}
