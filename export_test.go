package pgxleak

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Seams for the external tests (package pgxleak_test): internals they check
// directly, exported only to the tests.
var (
	CulpritIndex           = culpritIndex           // the first frame outside the libraries
	LibraryPrefixes        = libraryPrefixes        // the function-name prefixes never blamed
	DefaultMaxOpenConns    = defaultMaxOpenConns()  // the default WithMaxOpenConns on this machine
	DefaultConnMaxLifetime = defaultConnMaxLifetime // the default WithConnMaxLifetime
	DefaultConnMaxIdleTime = defaultConnMaxIdleTime // the idle time Open sets
	CapacitySummary        = Capacity.summary       // the check in words, as WithCapacityCheck logs it

	OSExit   *func(int) = &osExit   // what VerifyTestMain exits with
	OSStderr *io.Writer = &osStderr // where VerifyTestMain writes its report

	RedactError      = redactError      // masks secrets in an error's text
	ConnectorSecrets = connectorSecrets // the passwords a pgx connector carries
)

// The limits Open sets but takes no option for (a user calls
// db.SetMaxIdleConns and db.SetConnMaxIdleTime after Open; the jitter is a
// tenth of the lifetime): tests that need them in force before Open
// returns, for the warm-up, the min-idle keeper or the lifetimes, set them
// here.

// MaxIdleConnsForTest sets the pool's MaxIdleConns from the start.
func MaxIdleConnsForTest(n int) Option {
	return optionFunc(func(c *config) { c.maxIdle, c.maxIdleSet = n, true })
}

// ConnMaxIdleTimeForTest sets the pool's ConnMaxIdleTime from the start.
func ConnMaxIdleTimeForTest(d time.Duration) Option {
	return optionFunc(func(c *config) { c.maxIdleTime = d })
}

// LifetimeJitterForTest sets the lifetime's jitter instead of a tenth of it.
func LifetimeJitterForTest(d time.Duration) Option {
	return optionFunc(func(c *config) { c.lifetimeJitter, c.jitterSet = d, true })
}

// DSNSecrets returns the passwords Open masks for dsn.
func DSNSecrets(dsn string) []string { return dsnSecrets(dsn, parseOrNil(dsn)) }

// PoolName returns the pool name Open derives from dsn.
func PoolName(dsn string) string { info, _ := parseDSN(dsn); return info.poolName }

// Draining reports whether Drain has started on db.
func Draining(db *sql.DB) bool { return poolOf(db).tracker.draining.Load() }

// PoolTuning is the pool configuration that options resolve to.
type PoolTuning struct {
	MaxOpen, MaxIdle, MinIdle int
	MaxUses                   int64
	LifetimeJitter            time.Duration
}

// PoolTuningOf returns the pool configuration opts resolve to.
func PoolTuningOf(opts ...Option) (PoolTuning, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return PoolTuning{}, err
	}
	return PoolTuning{MaxOpen: cfg.maxOpen, MaxIdle: cfg.maxIdle, MinIdle: cfg.minIdle,
		MaxUses: cfg.maxUses, LifetimeJitter: cfg.lifetimeJitter}, nil
}

// ConnLifetimes returns the jittered lifetimes n connections over inner
// get in one pool configured by opts: the time each has left right after
// its connect, or 0 if it has no end of life of pgxleak's (database/sql's
// lifetime alone applies).
func ConnLifetimes(t testing.TB, inner driver.Conn, n int, opts ...Option) []time.Duration {
	p := newTestTracker(t, opts)
	p.jitter.Store(p.cfg.jittered())
	out := make([]time.Duration, n)
	for i := range out {
		if c := newConn(p, inner); c.expiresAt != 0 {
			out[i] = time.Duration(c.expiresAt - p.now())
		}
	}
	return out
}

// WrapConn wraps inner as a pool configured by opts does on connect and
// returns what database/sql sees, and the pool's *sql.DB (with the limits
// Open sets; it never connects), whose lifetime the jitter follows.
// expire(true) puts the connection past its jittered end of life,
// expire(false) gives it none.
func WrapConn(t testing.TB, inner driver.Conn, opts ...Option) (w driver.Conn, db *sql.DB, expire func(bool)) {
	p := newTestTracker(t, opts)
	p.db = sql.OpenDB(dsnConnector{driver: &sqlDriver{}})
	t.Cleanup(func() { _ = p.db.Close() })
	p.db.SetConnMaxLifetime(p.cfg.maxLifetime)
	p.jitter.Store(p.cfg.jittered())
	c := newConn(p, inner)
	return c.wrapper, p.db, func(expired bool) {
		c.expiresAt = 0
		if expired {
			c.expiresAt = p.now() - 1
		}
	}
}

// Limits are the pool limits in force on a *sql.DB, as pgxleak reads them
// back from database/sql; Read is false if this Go's sql.DB could not be
// read.
type Limits struct {
	MaxOpen, MaxIdle         int
	MaxLifetime, MaxIdleTime time.Duration
	Read                     bool
}

// LimitsOf reads db's limits in force, as pgxleak does.
func LimitsOf(db *sql.DB) Limits {
	cfg, _ := newConfig(nil)
	l := dbFields.read(db, cfg)
	return Limits{MaxOpen: l.maxOpen, MaxIdle: l.maxIdle, MaxLifetime: l.maxLifetime, MaxIdleTime: l.maxIdleTime, Read: l.read}
}

// Jittered reports whether db's connections still get pgxleak's jittered
// end of life.
func Jittered(db *sql.DB) bool { return poolOf(db).jitter.Load() }

// newTestTracker returns the tracker of a pool configured by opts, without
// a *sql.DB; it is closed when t ends.
func newTestTracker(t testing.TB, opts []Option) *pool {
	t.Helper()
	cfg, err := newConfig(opts)
	require.NoError(t, err)
	p := newPool(cfg, "test")
	t.Cleanup(p.close)
	return p
}

// CollectAfterClose checks a connection out of a pool configured by opts,
// closes the pool (which reports it as still out), then runs the cleanup
// of a Rows on it garbage-collected without Close. It returns what the pool
// counted and queued afterwards.
func CollectAfterClose(t testing.TB, inner driver.Conn, opts ...Option) (stillOut, collected uint64, queued int) {
	p := newTestTracker(t, opts)
	p.start()
	c := newConn(p, inner)
	c.mu.Lock()
	c.checkoutLocked(context.Background())
	c.mu.Unlock()
	p.close()
	rowsCollected(gcToken{&c.connState, c.checkouts})
	p.tracker.queueMu.Lock()
	defer p.tracker.queueMu.Unlock()
	return p.tracker.stillOutLeaks.Load(), p.tracker.gcLeaks.Load(), len(p.tracker.queue)
}

// IsolateRegistry gives t a registry of pools of its own, so that pools
// other tests closed with connections out (on purpose) are not checked by
// the VerifyTestMain it runs.
func IsolateRegistry(t testing.TB) {
	saved := openPools
	openPools = newPoolRegistry()
	t.Cleanup(func() { openPools = saved })
}

// DefaultOpenTimeout is Open's documented limit.
var DefaultOpenTimeout = openTimeout

// SetOpenTimeout shortens Open's limit until t ends.
func SetOpenTimeout(t testing.TB, d time.Duration) {
	old := openTimeout
	openTimeout = d
	t.Cleanup(func() { openTimeout = old })
}

// ForgetDumps makes an idle pool forget its goroutine dumps: the last one
// taken, the diagnosis made from it, and the one the pending count last
// saw. Each is bounded (gdump.MaxBytes), but its size follows the
// goroutines alive when it was taken, which a loaded machine raises, not
// the number of checkouts: the memory tests forget them before each
// measurement. The next report or inspection takes a new one.
func ForgetDumps(db *sql.DB) {
	p := poolOf(db)
	st := &p.diagnosis
	st.diagMu.Lock() // every Take is made under it
	st.dumps.Forget()
	st.last, st.outBeforeDump, st.dumpOf = nil, nil, nil
	st.diagMu.Unlock()
	p.tel.pend.mu.Lock()
	p.tel.pend.last = nil
	p.tel.pend.mu.Unlock()
}
