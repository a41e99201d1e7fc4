package pgxleak

import (
	"database/sql"
	"fmt"
	"io"
	"os"
	"slices"
	"time"
)

// Seams for testing VerifyTestMain without exiting.
var (
	osExit             = os.Exit
	osStderr io.Writer = os.Stderr
)

// verbConfig is what the options of Find, VerifyNone, VerifyTestMain and
// Drain set; the pool's own options are ignored there.
type verbConfig struct {
	grace     time.Duration
	ignore    []string
	terminate bool // Drain: WithTerminateStillOut
}

// verbOption is an Option of Find, VerifyNone, VerifyTestMain or Drain.
// Open and OpenDB refuse it, naming it.
type verbOption struct {
	name string
	set  func(*verbConfig)
}

func (o verbOption) apply(c *config) {
	c.errs = append(c.errs, fmt.Errorf("pgxleak: %s is an option of Find, VerifyNone, VerifyTestMain and Drain, not of Open", o.name))
}

func (o verbOption) setVerb(c *verbConfig) { o.set(c) }

// ignoreFunction is WithIgnoredFunction: an option of the checks that Open
// takes too, to mark checkouts held on purpose.
type ignoreFunction string

// An empty fn ignores nothing and marks nothing.
func (fn ignoreFunction) apply(c *config) {
	if fn != "" {
		c.onPurpose = append(c.onPurpose, string(fn))
	}
}

func (fn ignoreFunction) setVerb(c *verbConfig) {
	if fn != "" {
		c.ignore = append(c.ignore, string(fn))
	}
}

// defaultGracePeriod is how long [Find] waits for connections to come back
// before it reports them: database/sql closes Rows and rolls back Tx on
// another goroutine when their context (say t.Context()) ends.
const defaultGracePeriod = time.Second

// WithGracePeriod sets how long Find polls for checked-out connections to come
// back before reporting them; 0 (or less) looks once, without waiting.
// Default: one second.
func WithGracePeriod(d time.Duration) Option {
	return verbOption{"WithGracePeriod", func(c *verbConfig) { c.grace = max(d, 0) }}
}

// WithIgnoredFunction ignores checkouts with a frame of the fully qualified
// function fn anywhere in their stack (not only as the culprit), e.g.
// "github.com/acme/app.(*Cache).warm", for a connection that is meant to
// outlive the test. It cannot match a checkout whose stack was not
// recorded (see [WithStackSampling]); such a checkout is listed, saying so.
//
// Given to [Open] or [OpenDB], it marks such checkouts as held on purpose,
// for a connection that is meant to be held for hours: a LISTEN
// connection waiting for notifications, a session-level advisory lock
// held for a job's lifetime. Such a checkout is never reported, counted
// or summarised as a leak (suspected, or still out at Close), and Find,
// VerifyNone and VerifyTestMain leave it out. It is still a checkout:
// [Checkouts], [Inspect] and the live page list it, with
// [Checkout].OnPurpose naming fn, it counts toward the pool's use, and
// [Drain] waits for it and lists it as held on purpose if it is still out.
// A dropped Rows on it is still reported as garbage-collected. The mark
// belongs to one checkout: once the connection comes back, the next
// checkout of it is tracked as usual, unless fn is on its stack too.
func WithIgnoredFunction(fn string) Option {
	return ignoreFunction(fn)
}

// newVerbConfig applies the verbs' options in opts, ignoring the others.
func newVerbConfig(opts []Option) *verbConfig {
	c := &verbConfig{grace: defaultGracePeriod}
	for _, o := range opts {
		if o, ok := o.(interface{ setVerb(*verbConfig) }); ok {
			o.setVerb(c)
		}
	}
	return c
}

func (c *verbConfig) ignored(co Checkout) bool {
	if co.OnPurpose != "" {
		return true
	}
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
// [WithGracePeriod] and [WithIgnoredFunction] apply; the pool's options are ignored.
func Find(db *sql.DB, opts ...Option) error {
	p := poolOf(db)
	if p == nil {
		return ErrNotTracked
	}
	return findIn([]*pool{p}, nil, newVerbConfig(opts))
}

// findIn is Find over pools and, for VerifyTestMain, the checkouts still
// out when their pools closed (reg; nil for none).
func findIn(pools []*pool, reg *poolRegistry, cfg *verbConfig) error {
	deadline := time.Now().Add(cfg.grace)
	for {
		var out []Checkout
		var notes []string
		unlisted := 0
		if reg != nil {
			left, dropped := reg.stillOut()
			for _, c := range left {
				if !cfg.ignored(c) {
					out = append(out, c)
				}
			}
			if dropped > 0 {
				notes = append(notes, fmt.Sprintf("%s still out when their pools closed and not listed: pgxleak keeps the first %d", numbered(dropped, "more connection was", "more connections were"), maxLeftovers))
			}
		}
		for _, p := range pools {
			all := p.checkouts()
			for _, c := range all {
				if !cfg.ignored(c) {
					out = append(out, c)
				}
			}
			// Never success while database/sql counts a connection in use
			// that is not listed: the pool's own warm-up, or one being
			// opened or closed, is waited for like a checkout.
			if p.db != nil {
				unlisted += max(p.db.Stats().InUse-len(all), 0)
			}
		}
		if len(out) == 0 && unlisted == 0 && len(notes) == 0 {
			return nil
		}
		if !time.Now().Before(deadline) {
			return &LeakError{Checkouts: out, Unlisted: unlisted, Notes: notes}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// VerifyNone fails the test if any connection is still checked out of db
// after the grace period, listing each with its culprit, stack and held
// time. Call it from t.Cleanup, which runs after t.Context() is cancelled,
// so that Rows and Tx on that context have been given back, and before
// Close: a closed pool can only report what is still out as a log line.
//
//	db, _ := pgxleak.Open("pgx", dsn)
//	t.Cleanup(func() { pgxleak.VerifyNone(t, db); db.Close() })
func VerifyNone(t interface{ Error(args ...any) }, db *sql.DB, opts ...Option) {
	if h, ok := t.(interface{ Helper() }); ok {
		h.Helper()
	}
	if err := Find(db, opts...); err != nil {
		t.Error(err)
	}
}

// VerifyTestMain runs the tests and, if they passed, checks every pool
// opened through pgxleak that is still open, and every pool closed during
// the tests with connections still out, failing the run (exit code 1) and
// naming their lines if any connection is still checked out after the
// grace period. (A pool closed during the tests reports its leftovers as
// a [LeakStillOut] log line too, but go test shows a passing package's
// output only with -v.) Use it in TestMain:
//
//	func TestMain(m *testing.M) { pgxleak.VerifyTestMain(m) }
func VerifyTestMain(m interface{ Run() int }, opts ...Option) {
	cfg := newVerbConfig(opts)
	code := m.Run()
	if code == 0 {
		if err := findIn(openPools.list(), openPools, cfg); err != nil {
			fmt.Fprintln(osStderr, "pgxleak: connections left checked out after the tests passed:\n"+err.Error())
			code = 1
		}
	}
	osExit(code)
}
