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
// outlive the test. It cannot match a checkout whose stack was not
// recorded (see [WithStackSampling]); such a checkout is listed, saying so.
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
		return ErrNotTracked
	}
	return findIn([]*pool{p}, newVerifyConfig(opts))
}

func findIn(pools []*pool, cfg *verifyConfig) error {
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
// so that Rows and Tx on that context have been given back, and before
// Close: a closed pool can only report what is still out as a log line.
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
// opened through pgxleak that is still open, and every pool closed during
// the tests with connections still out, failing the run (exit code 1) and
// naming their lines if any connection is still checked out after the
// grace period. (A pool closed during the tests reports its leftovers as
// a [LeakStillOut] log line too, but go test shows a passing package's
// output only with -v.) Use it in TestMain:
//
//	func TestMain(m *testing.M) { pgxleak.VerifyTestMain(m) }
func VerifyTestMain(m TestingM, opts ...VerifyOption) {
	cfg := newVerifyConfig(opts)
	code := m.Run()
	if code == 0 {
		if err := findIn(openPools.withLeftovers(), cfg); err != nil {
			fmt.Fprintln(osStderr, "pgxleak: connections left checked out after the tests passed:\n"+err.Error())
			code = 1
		}
	}
	osExit(code)
}
