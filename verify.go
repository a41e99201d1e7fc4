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
	terminate bool // Drain: TerminateStillOut
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

// defaultGracePeriod is how long [Find] waits for connections to come back
// before it reports them: database/sql closes Rows and rolls back Tx on
// another goroutine when their context (say t.Context()) ends.
const defaultGracePeriod = time.Second

// GracePeriod sets how long Find polls for checked-out connections to come
// back before reporting them; 0 (or less) looks once, without waiting.
// Default: one second.
func GracePeriod(d time.Duration) Option {
	return verbOption{"GracePeriod", func(c *verbConfig) { c.grace = max(d, 0) }}
}

// IgnoreFunction ignores checkouts with a frame of the fully qualified
// function fn anywhere in their stack (not only as the culprit), e.g.
// "github.com/acme/app.(*Cache).warm", for a connection that is meant to
// outlive the test. It cannot match a checkout whose stack was not
// recorded (see [WithStackSampling]); such a checkout is listed, saying so.
// An empty fn ignores nothing.
func IgnoreFunction(fn string) Option {
	return verbOption{"IgnoreFunction", func(c *verbConfig) {
		if fn != "" {
			c.ignore = append(c.ignore, fn)
		}
	}}
}

// newVerbConfig applies the verbs' options in opts, ignoring the others.
func newVerbConfig(opts []Option) *verbConfig {
	c := &verbConfig{grace: defaultGracePeriod}
	for _, o := range opts {
		if o, ok := o.(verbOption); ok {
			o.set(c)
		}
	}
	return c
}

func (c *verbConfig) ignored(co Checkout) bool {
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
// [GracePeriod] and [IgnoreFunction] apply; the pool's options are ignored.
func Find(db *sql.DB, opts ...Option) error {
	p := poolOf(db)
	if p == nil {
		return ErrNotTracked
	}
	return findIn([]*pool{p}, newVerbConfig(opts))
}

func findIn(pools []*pool, cfg *verbConfig) error {
	deadline := time.Now().Add(cfg.grace)
	for {
		var out []Checkout
		unlisted := 0
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
		if len(out) == 0 && unlisted == 0 {
			return nil
		}
		if !time.Now().Before(deadline) {
			return &LeakError{Checkouts: out, Unlisted: unlisted}
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
		if err := findIn(openPools.withLeftovers(), cfg); err != nil {
			fmt.Fprintln(osStderr, "pgxleak: connections left checked out after the tests passed:\n"+err.Error())
			code = 1
		}
	}
	osExit(code)
}
