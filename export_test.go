package pgxleak

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"io"
	"testing"
	"time"
)

// Seams for the external tests (package pgxleak_test): internals they check
// directly, exported only to the tests.
var (
	CulpritIndex           = culpritIndex           // the first frame outside the libraries
	LibraryPrefixes        = libraryPrefixes        // the function-name prefixes never blamed
	DefaultMaxOpenConns    = defaultMaxOpenConns()  // the default WithMaxOpenConns on this machine
	DefaultConnMaxLifetime = defaultConnMaxLifetime // the default WithConnMaxLifetime
	DefaultConnMaxIdleTime = defaultConnMaxIdleTime // the default WithConnMaxIdleTime

	OSExit   *func(int) = &osExit   // what VerifyTestMain exits with
	OSStderr *io.Writer = &osStderr // where VerifyTestMain writes its report

	RedactError      = redactError      // masks secrets in an error's text
	ConnectorSecrets = connectorSecrets // the passwords a pgx connector carries
)

// DSNSecrets returns the passwords Open masks for dsn.
func DSNSecrets(dsn string) []string { return dsnSecrets(dsn, parseOrNil(dsn)) }

// PoolName returns the pool name Open derives from dsn.
func PoolName(dsn string) string { return parseDSN(dsn).poolName }

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

// ConnLifetimes returns the lifetimes n connections over inner get in one
// pool configured by opts: the time each has left right after its connect.
func ConnLifetimes(t testing.TB, inner driver.Conn, n int, opts ...Option) []time.Duration {
	p := newTestTracker(t, opts)
	out := make([]time.Duration, n)
	for i := range out {
		c := newConn(p, inner)
		out[i] = time.Duration(c.expiresAt - p.now())
	}
	return out
}

// WrapConn wraps inner as a pool configured by opts does on connect and
// returns what database/sql sees; expire(true) puts the connection past its
// end of life, expire(false) gives it none.
func WrapConn(t testing.TB, inner driver.Conn, opts ...Option) (w driver.Conn, expire func(bool)) {
	p := newTestTracker(t, opts)
	c := newConn(p, inner)
	return c.wrapper, func(expired bool) {
		c.expiresAt = 0
		if expired {
			c.expiresAt = p.now() - 1
		}
	}
}

// newTestTracker returns the tracker of a pool configured by opts, without
// a *sql.DB; it is closed when t ends.
func newTestTracker(t testing.TB, opts []Option) *pool {
	t.Helper()
	cfg, err := newConfig(opts)
	if err != nil {
		t.Fatal(err)
	}
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
	openPools = &poolRegistry{pools: make(map[*pool]struct{}), leftovers: make(map[*pool]struct{})}
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
