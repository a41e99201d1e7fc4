package pgxleak_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// holdConcurrently checks out n connections so that all n are out at once,
// then returns them.
func holdConcurrently(t testing.TB, db *sql.DB, n int) {
	t.Helper()
	conns := make([]*sql.Conn, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := db.Conn(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			assert.NoError(t, c.PingContext(context.Background()))
			conns[i] = c
		})
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

func TestDefaultsReplaceDatabaseSQLs(t *testing.T) {
	db, _ := openTest(t)
	st := db.Stats()
	if st.MaxOpenConnections != pgxleak.DefaultMaxOpenConns {
		t.Fatalf("MaxOpenConnections = %d, want %d", st.MaxOpenConnections, pgxleak.DefaultMaxOpenConns)
	}
	// Idle defaults to max: after a burst every connection stays idle,
	// where database/sql would close all but two.
	holdConcurrently(t, db, pgxleak.DefaultMaxOpenConns)
	st = db.Stats()
	if st.Idle != pgxleak.DefaultMaxOpenConns || st.MaxIdleClosed != 0 {
		t.Fatalf("after a burst: Idle = %d, MaxIdleClosed = %d; want %d idle, none closed", st.Idle, st.MaxIdleClosed, pgxleak.DefaultMaxOpenConns)
	}
	if st.OpenConnections != st.Idle {
		t.Fatalf("OpenConnections = %d, want %d", st.OpenConnections, st.Idle)
	}
}

// TestMaxOpenAndIdle checks WithMaxOpenConns and WithMaxIdleConns through
// db.Stats() and through the server's own count of the pool's backends.
func TestMaxOpenAndIdle(t *testing.T) {
	db, dsn := openTest(t, pgxleak.WithMaxOpenConns(3), pgxleak.WithMaxIdleConns(1))
	app := pgtest.ApplicationName(dsn)
	// Eight goroutines want a connection for a while; only three may have one.
	var wg sync.WaitGroup
	release := make(chan struct{})
	started := make(chan struct{}, 8)
	for range 8 {
		wg.Go(func() {
			c, err := db.Conn(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			started <- struct{}{}
			<-release
		})
	}
	for range 3 {
		<-started
	}
	pgtest.WaitFor(t, 5*time.Second, "five goroutines waiting", func() bool { return db.Stats().WaitCount >= 5 })
	if n := pgtest.CountConnections(t, dsn, app); n != 3 {
		t.Fatalf("server sees %d connections, want 3", n)
	}
	if st := db.Stats(); st.OpenConnections != 3 || st.InUse != 3 {
		t.Fatalf("stats %+v, want 3 open, 3 in use", st)
	}
	close(release)
	wg.Wait()
	st := db.Stats()
	if st.Idle != 1 || st.OpenConnections != 1 || st.MaxIdleClosed != 2 {
		t.Fatalf("after release: %+v; want 1 idle, 1 open, 2 closed for MaxIdle", st)
	}
	pgtest.WaitFor(t, 5*time.Second, "server to see 1 connection", func() bool { return pgtest.CountConnections(t, dsn, app) == 1 })
}

// TestMinIdleWarmUp: Open opens exactly the minimum before it returns.
func TestMinIdleWarmUp(t *testing.T) {
	db, dsn := openTest(t, pgxleak.WithMaxOpenConns(6), pgxleak.WithMinIdleConns(4))
	st := db.Stats()
	if st.OpenConnections != 4 || st.Idle != 4 || st.InUse != 0 {
		t.Fatalf("right after Open: %+v; want 4 open and idle", st)
	}
	if n := pgtest.CountConnections(t, dsn, pgtest.ApplicationName(dsn)); n != 4 {
		t.Fatalf("server sees %d connections right after Open, want 4", n)
	}
	if st := pgxleak.Stats(db); st.Checkouts != 0 || st.CheckedOut != 0 {
		t.Fatalf("the warm-up counted as user checkouts: %+v", st)
	}
}

// TestMinIdleKept: with a short idle time, database/sql would close every
// idle connection; the pool keeps the minimum, and only the surplus goes.
func TestMinIdleKept(t *testing.T) {
	const idle = 150 * time.Millisecond
	db, dsn := openTest(t, pgxleak.WithMaxOpenConns(5), pgxleak.WithMinIdleConns(2), pgxleak.WithConnMaxIdleTime(idle))
	app := pgtest.ApplicationName(dsn)
	holdConcurrently(t, db, 5)
	pgtest.WaitFor(t, 10*time.Second, "surplus connections to expire", func() bool { return db.Stats().MaxIdleTimeClosed >= 3 })
	// Over several idle periods the minimum must hold every time we look.
	deadline := time.Now().Add(6 * idle)
	for time.Now().Before(deadline) {
		if n := pgtest.CountConnections(t, dsn, app); n < 2 {
			t.Fatalf("server sees %d connections; the minimum of 2 idle was not kept", n)
		}
		time.Sleep(idle / 3)
	}
	if st := pgxleak.Stats(db); st.Checkouts != 5 || st.Returns != 5 {
		t.Fatalf("want only the burst's 5 checkouts counted, not the pool's own: %+v", st)
	}
}

func TestMinIdleUnreachable(t *testing.T) {
	start := time.Now()
	_, err := pgxleak.Open("pgx", "postgres://postgres:pw@127.0.0.1:1/test?connect_timeout=2", pgxleak.WithMinIdleConns(2))
	if err == nil {
		t.Fatal("Open succeeded with an unreachable server")
	}
	if !strings.Contains(err.Error(), "WithMinIdleConns") || !strings.HasPrefix(err.Error(), "pgxleak:") {
		t.Fatalf("error does not say what failed: %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("Open took %v", time.Since(start))
	}
}

// TestLifetimeGovernedByOption: pgxleak enforces WithConnMaxLifetime
// itself, so db.SetConnMaxLifetime(0) after Open changes only database/sql's
// own check; the connections pgxleak discards are counted in
// PoolStats.LifetimeDiscarded (database/sql's MaxLifetimeClosed does not
// see them).
func TestLifetimeGovernedByOption(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(1),
		pgxleak.WithConnMaxLifetime(50*time.Millisecond), pgxleak.WithConnMaxLifetimeJitter(0))
	db.SetConnMaxLifetime(0)
	pgtest.WaitFor(t, 10*time.Second, "a connection discarded at the end of its lifetime", func() bool {
		_, err := db.Exec("SELECT 1")
		require.NoError(t, err)
		return pgxleak.Stats(db).LifetimeDiscarded > 0
	})
	if st := pgxleak.Stats(db); st.MaxLifetimeClosed != 0 {
		t.Fatalf("stats %+v: database/sql's own lifetime was turned off", st)
	}
}

// TestMinIdleUnreachableOneError: warming up n connections to a server
// that is down gives its error once, not n times.
func TestMinIdleUnreachableOneError(t *testing.T) {
	_, err := pgxleak.Open("pgx", "postgres://postgres@127.0.0.1:1/test?connect_timeout=2", pgxleak.WithMinIdleConns(4), pgxleak.WithMaxOpenConns(4))
	if err == nil {
		t.Fatal("Open succeeded with an unreachable server")
	}
	if n := strings.Count(err.Error(), "failed to connect"); n != 1 {
		t.Fatalf("the connect error appears %d times:\n%v", n, err)
	}
}

// TestMaxUses: with one connection and three uses each, the backend PID
// changes every third query.
func TestMaxUses(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(1), pgxleak.WithMaxUses(3))
	var pids []int
	for range 9 {
		var pid int
		require.NoError(t, db.QueryRow("SELECT pg_backend_pid()").Scan(&pid))
		pids = append(pids, pid)
	}
	for i := range pids {
		sameAsPrev := i > 0 && pids[i] == pids[i-1]
		if want := i%3 != 0; sameAsPrev != want {
			t.Fatalf("backend PIDs %v: want a new backend every 3 uses", pids)
		}
	}
}

// TestLifetimeExpiresOnReturn: a connection past its (jittered) lifetime is
// discarded when it comes back, not reused.
func TestLifetimeExpiresOnReturn(t *testing.T) {
	db2, _ := openTest(t, pgxleak.WithMaxOpenConns(1),
		pgxleak.WithConnMaxLifetime(100*time.Millisecond), pgxleak.WithConnMaxLifetimeJitter(50*time.Millisecond))
	var pid1, pid2 int
	c, err := db2.Conn(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.QueryRowContext(context.Background(), "SELECT pg_backend_pid()").Scan(&pid1))
	start := time.Now()
	pgtest.WaitFor(t, time.Second, "the lifetime to pass", func() bool { return time.Since(start) > 120*time.Millisecond })
	c.Close() // returned after its lifetime: IsValid says no
	if st := db2.Stats(); st.OpenConnections != 0 {
		t.Fatalf("expired connection kept: %+v", st)
	}
	require.NoError(t, db2.QueryRow("SELECT pg_backend_pid()").Scan(&pid2))
	if pid1 == pid2 {
		t.Fatal("expired connection reused")
	}
}

// TestJitterSpreadsLifetimes: each connection gets its own lifetime in
// [lifetime−jitter, lifetime], spread rather than equal.
func TestJitterSpreadsLifetimes(t *testing.T) {
	const life, jitter = time.Hour, 10 * time.Minute
	inner, _ := (&testdriver.Connector{}).Connect(context.Background())
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for _, got := range pgxleak.ConnLifetimes(t, inner, 200, pgxleak.WithConnMaxLifetime(life), pgxleak.WithConnMaxLifetimeJitter(jitter)) {
		if got > life || got < life-jitter-time.Second {
			t.Fatalf("lifetime %v outside [%v, %v]", got, life-jitter, life)
		}
		lo, hi = min(lo, got), max(hi, got)
	}
	if hi-lo < jitter/2 {
		t.Fatalf("200 lifetimes spread over only %v of the %v jitter", hi-lo, jitter)
	}
	got := pgxleak.ConnLifetimes(t, inner, 1, pgxleak.WithConnMaxLifetime(life), pgxleak.WithConnMaxLifetimeJitter(0))[0]
	if got > life || got < life-time.Second {
		t.Fatalf("without jitter the lifetime is %v, want %v", got, life)
	}
}

func TestDefaultConfig(t *testing.T) {
	cfg, err := pgxleak.PoolTuningOf()
	require.NoError(t, err)
	if cfg.MaxIdle != cfg.MaxOpen || cfg.LifetimeJitter != pgxleak.DefaultConnMaxLifetime/10 || cfg.MinIdle != 0 || cfg.MaxUses != 0 {
		t.Fatalf("defaults: %+v", cfg)
	}
}

// TestExpiredConnectionDiscarded: past its jittered lifetime a connection
// is refused at checkout (ResetSession → ErrBadConn) and at return
// (IsValid → false), before database/sql's own, later, maximum.
func TestExpiredConnectionDiscarded(t *testing.T) {
	inner, _ := (&testdriver.Connector{}).Connect(context.Background())
	w, expire := pgxleak.WrapConn(t, inner, pgxleak.WithMaxUses(2))
	require.NoError(t, w.(driver.SessionResetter).ResetSession(context.Background()), "fresh connection refused")
	if !w.(driver.Validator).IsValid() {
		t.Fatal("fresh connection invalid after one use")
	}
	expire(true)
	if err := w.(driver.SessionResetter).ResetSession(context.Background()); err != driver.ErrBadConn {
		t.Fatalf("expired connection: ResetSession = %v, want driver.ErrBadConn", err)
	}
	expire(false)
	_ = w.(driver.SessionResetter).ResetSession(context.Background()) // second use
	if w.(driver.Validator).IsValid() {
		t.Fatal("connection valid after reaching WithMaxUses(2)")
	}
}
