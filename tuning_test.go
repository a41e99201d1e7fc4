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
			if !assert.NoError(t, err) {
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
	require.Equal(t, pgxleak.DefaultMaxOpenConns, st.MaxOpenConnections, "MaxOpenConnections")
	// Idle defaults to max: after a burst every connection stays idle,
	// where database/sql would close all but two.
	holdConcurrently(t, db, pgxleak.DefaultMaxOpenConns)
	st = db.Stats()
	assert.Equal(t, pgxleak.DefaultMaxOpenConns, st.Idle, "idle after a burst")
	assert.Zero(t, st.MaxIdleClosed, "closed for MaxIdle after a burst")
	assert.Equal(t, st.Idle, st.OpenConnections, "open after a burst: all idle")
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
			if !assert.NoError(t, err) {
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
	require.Equal(t, 3, pgtest.CountConnections(t, dsn, app), "connections the server sees")
	st := db.Stats()
	require.Equal(t, 3, st.OpenConnections, "open")
	require.Equal(t, 3, st.InUse, "in use")
	close(release)
	wg.Wait()
	st = db.Stats()
	require.Equal(t, 1, st.Idle, "idle after release")
	require.Equal(t, 1, st.OpenConnections, "open after release")
	require.EqualValues(t, 2, st.MaxIdleClosed, "closed for MaxIdle after release")
	pgtest.WaitFor(t, 5*time.Second, "server to see 1 connection", func() bool { return pgtest.CountConnections(t, dsn, app) == 1 })
}

// TestMinIdleWarmUp: Open opens exactly the minimum before it returns.
func TestMinIdleWarmUp(t *testing.T) {
	db, dsn := openTest(t, pgxleak.WithMaxOpenConns(6), pgxleak.WithMinIdleConns(4))
	st := db.Stats()
	assert.Equal(t, 4, st.OpenConnections, "open right after Open")
	assert.Equal(t, 4, st.Idle, "idle right after Open")
	assert.Zero(t, st.InUse, "in use right after Open")
	assert.Equal(t, 4, pgtest.CountConnections(t, dsn, pgtest.ApplicationName(dsn)), "connections the server sees right after Open")
	pst := stats(t, db)
	assert.Zero(t, pst.Checkouts, "the warm-up counted as user checkouts")
	assert.Zero(t, pst.CheckedOut, "the warm-up counted as user checkouts")
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
		require.GreaterOrEqual(t, pgtest.CountConnections(t, dsn, app), 2, "connections the server sees: the minimum of 2 idle was not kept")
		time.Sleep(idle / 3)
	}
	st := stats(t, db)
	assert.EqualValues(t, 5, st.Checkouts, "only the burst's checkouts count, not the pool's own")
	assert.EqualValues(t, 5, st.Returns, "only the burst's returns count, not the pool's own")
}

func TestMinIdleUnreachable(t *testing.T) {
	start := time.Now()
	_, err := pgxleak.Open("pgx", "postgres://postgres:pw@127.0.0.1:1/test?connect_timeout=2", pgxleak.WithMinIdleConns(2))
	require.Error(t, err, "Open succeeded with an unreachable server")
	assert.Contains(t, err.Error(), "WithMinIdleConns", "the error says what failed")
	assert.True(t, strings.HasPrefix(err.Error(), "pgxleak:"), "error %v: want a pgxleak error", err)
	assert.LessOrEqual(t, time.Since(start), 10*time.Second, "Open's time")
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
		return stats(t, db).LifetimeDiscarded > 0
	})
	assert.Zero(t, stats(t, db).MaxLifetimeClosed, "database/sql's own lifetime is turned off")
}

// TestMinIdleUnreachableOneError: warming up n connections to a server
// that is down gives its error once, not n times.
func TestMinIdleUnreachableOneError(t *testing.T) {
	_, err := pgxleak.Open("pgx", "postgres://postgres@127.0.0.1:1/test?connect_timeout=2", pgxleak.WithMinIdleConns(4), pgxleak.WithMaxOpenConns(4))
	require.Error(t, err, "Open succeeded with an unreachable server")
	assert.Equal(t, 1, strings.Count(err.Error(), "failed to connect"), "the connect error's count in:\n%v", err)
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
		require.Equal(t, i%3 != 0, sameAsPrev, "backend PIDs %v: want a new backend every 3 uses", pids)
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
	require.Zero(t, db2.Stats().OpenConnections, "expired connection kept")
	require.NoError(t, db2.QueryRow("SELECT pg_backend_pid()").Scan(&pid2))
	assert.NotEqual(t, pid1, pid2, "expired connection reused")
}

// TestJitterSpreadsLifetimes: each connection gets its own lifetime in
// [lifetime−jitter, lifetime], spread rather than equal.
func TestJitterSpreadsLifetimes(t *testing.T) {
	const life, jitter = time.Hour, 10 * time.Minute
	inner, _ := (&testdriver.Connector{}).Connect(context.Background())
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for _, got := range pgxleak.ConnLifetimes(t, inner, 200, pgxleak.WithConnMaxLifetime(life), pgxleak.WithConnMaxLifetimeJitter(jitter)) {
		require.True(t, got <= life && got >= life-jitter-time.Second, "lifetime %v outside [%v, %v]", got, life-jitter, life)
		lo, hi = min(lo, got), max(hi, got)
	}
	require.GreaterOrEqual(t, hi-lo, jitter/2, "200 lifetimes' spread over the %v jitter", jitter)
	got := pgxleak.ConnLifetimes(t, inner, 1, pgxleak.WithConnMaxLifetime(life), pgxleak.WithConnMaxLifetimeJitter(0))[0]
	assert.True(t, got <= life && got >= life-time.Second, "without jitter the lifetime is %v, want %v", got, life)
}

func TestDefaultConfig(t *testing.T) {
	cfg, err := pgxleak.PoolTuningOf()
	require.NoError(t, err)
	assert.Equal(t, cfg.MaxOpen, cfg.MaxIdle, "MaxIdle defaults to MaxOpen")
	assert.Equal(t, pgxleak.DefaultConnMaxLifetime/10, cfg.LifetimeJitter, "the jitter defaults to a tenth of the lifetime")
	assert.Zero(t, cfg.MinIdle)
	assert.Zero(t, cfg.MaxUses)
}

// TestExpiredConnectionDiscarded: past its jittered lifetime a connection
// is refused at checkout (ResetSession → ErrBadConn) and at return
// (IsValid → false), before database/sql's own, later, maximum.
func TestExpiredConnectionDiscarded(t *testing.T) {
	inner, _ := (&testdriver.Connector{}).Connect(context.Background())
	w, expire := pgxleak.WrapConn(t, inner, pgxleak.WithMaxUses(2))
	require.NoError(t, w.(driver.SessionResetter).ResetSession(context.Background()), "fresh connection refused")
	require.True(t, w.(driver.Validator).IsValid(), "fresh connection invalid after one use")
	expire(true)
	require.Same(t, driver.ErrBadConn, w.(driver.SessionResetter).ResetSession(context.Background()), "an expired connection's ResetSession")
	expire(false)
	_ = w.(driver.SessionResetter).ResetSession(context.Background()) // second use
	assert.False(t, w.(driver.Validator).IsValid(), "connection valid after reaching WithMaxUses(2)")
}
