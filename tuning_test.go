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

// TestMaxOpenAndIdle checks WithMaxOpenConns and a db.SetMaxIdleConns after
// Open through db.Stats() and through the server's own count of the pool's
// backends.
func TestMaxOpenAndIdle(t *testing.T) {
	db, dsn := openTest(t, pgxleak.WithMaxOpenConns(3))
	db.SetMaxIdleConns(1)
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
	db, dsn := openTest(t, pgxleak.WithMaxOpenConns(5), pgxleak.WithMinIdleConns(2), pgxleak.ConnMaxIdleTimeForTest(idle))
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
		pgxleak.WithConnMaxLifetime(100*time.Millisecond), pgxleak.LifetimeJitterForTest(50*time.Millisecond))
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
// [lifetime−jitter, lifetime], spread rather than equal; without jitter it
// gets none of pgxleak's, and database/sql's lifetime alone applies.
func TestJitterSpreadsLifetimes(t *testing.T) {
	const life, jitter = time.Hour, 10 * time.Minute
	inner, _ := (&testdriver.Connector{}).Connect(context.Background())
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for _, got := range pgxleak.ConnLifetimes(t, inner, 200, pgxleak.WithConnMaxLifetime(life), pgxleak.LifetimeJitterForTest(jitter)) {
		require.True(t, got <= life && got >= life-jitter-time.Second, "lifetime %v outside [%v, %v]", got, life-jitter, life)
		lo, hi = min(lo, got), max(hi, got)
	}
	assert.GreaterOrEqual(t, hi-lo, jitter/2, "200 lifetimes spread over only %v of the %v jitter", hi-lo, jitter)
	got := pgxleak.ConnLifetimes(t, inner, 1, pgxleak.WithConnMaxLifetime(life), pgxleak.LifetimeJitterForTest(0))[0]
	assert.Zero(t, got, "without jitter a connection has an end of life of pgxleak's")
}

func TestDefaultConfig(t *testing.T) {
	cfg, err := pgxleak.PoolTuningOf()
	require.NoError(t, err)
	assert.Equal(t, cfg.MaxOpen, cfg.MaxIdle, "MaxIdle defaults to MaxOpen")
	assert.Equal(t, pgxleak.DefaultConnMaxLifetime/10, cfg.LifetimeJitter, "the jitter defaults to a tenth of the lifetime")
	assert.Zero(t, cfg.MinIdle)
	assert.Zero(t, cfg.MaxUses)
}

// TestExpiredConnectionDiscarded: past its jittered end of life a
// connection is refused at checkout (ResetSession → ErrBadConn) and at
// return (IsValid → false), before database/sql's own, later, maximum;
// WithMaxUses discards it at the return that reaches the maximum.
func TestExpiredConnectionDiscarded(t *testing.T) {
	inner, _ := (&testdriver.Connector{}).Connect(context.Background())
	w, _, expire := pgxleak.WrapConn(t, inner, pgxleak.WithMaxUses(2))
	require.NoError(t, w.(driver.SessionResetter).ResetSession(context.Background()), "fresh connection refused")
	require.True(t, w.(driver.Validator).IsValid(), "fresh connection invalid after one use")
	expire(true)
	require.ErrorIs(t, w.(driver.SessionResetter).ResetSession(context.Background()), driver.ErrBadConn, "expired connection checked out")
	expire(false)
	_ = w.(driver.SessionResetter).ResetSession(context.Background()) // second use
	assert.False(t, w.(driver.Validator).IsValid(), "connection valid after reaching WithMaxUses(2)")
}

// TestJitterFollowsLifetime: the jitter only shortens the lifetime pgxleak
// set. Once db.SetConnMaxLifetime sets another one (0 included), a
// connection past its jittered end is kept, for good: database/sql's
// lifetime alone applies, as on a plain pool.
func TestJitterFollowsLifetime(t *testing.T) {
	const life = time.Hour
	for _, tc := range []struct {
		name    string
		set     []time.Duration // db.SetConnMaxLifetime calls, in order
		discard bool
	}{
		{"no setter", nil, true},
		{"the same lifetime again", []time.Duration{life}, true},
		{"0: forever", []time.Duration{0}, false},
		{"longer", []time.Duration{2 * life}, false},
		{"shorter", []time.Duration{life / 2}, false},
		{"another, then back", []time.Duration{0, life}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner, _ := (&testdriver.Connector{}).Connect(context.Background())
			w, db, expire := pgxleak.WrapConn(t, inner, pgxleak.WithConnMaxLifetime(life))
			for i, d := range tc.set {
				db.SetConnMaxLifetime(d)
				if i == 0 && len(tc.set) > 1 { // seen in between, as any checkout past its end would
					expire(true)
					require.NoError(t, w.(driver.SessionResetter).ResetSession(context.Background()))
				}
			}
			expire(true)
			err := w.(driver.SessionResetter).ResetSession(context.Background())
			valid := w.(driver.Validator).IsValid()
			if tc.discard {
				assert.ErrorIs(t, err, driver.ErrBadConn, "checkout past the jittered end")
				assert.False(t, valid, "return past the jittered end")
			} else {
				assert.NoError(t, err, "checkout past the jittered end of a lifetime no longer in force")
				assert.True(t, valid, "return past the jittered end of a lifetime no longer in force")
			}
		})
	}
}

// TestMinIdleFollowsSetters: the min-idle keeper follows the limits in
// force after db.Set… calls, not the ones given at Open: it keeps no more
// than database/sql keeps idle (more would be closed at every round and
// re-opened at the next), keeps working when the maximum of open
// connections is lifted, and refreshes its connections within half an idle
// time shortened after Open.
func TestMinIdleFollowsSetters(t *testing.T) {
	const idle = 200 * time.Millisecond // the keeper runs every 100ms
	for _, tc := range []struct {
		name  string
		opts  []pgxleak.Option
		set   func(db *sql.DB)
		check func(t *testing.T, db *sql.DB)
	}{
		{
			name: "SetMaxIdleConns below the minimum",
			opts: []pgxleak.Option{pgxleak.WithMinIdleConns(3), pgxleak.ConnMaxIdleTimeForTest(idle)},
			set:  func(db *sql.DB) { db.SetMaxIdleConns(1) },
			check: func(t *testing.T, db *sql.DB) {
				// SetMaxIdleConns closed two; the keeper's rounds close none.
				start := time.Now()
				pgtest.WaitFor(t, 20*time.Second, "ten keeper periods", func() bool {
					require.Equal(t, int64(2), db.Stats().MaxIdleClosed, "the keeper churns connections database/sql closes as surplus")
					return time.Since(start) > 10*idle/2
				})
				pgtest.WaitFor(t, 10*time.Second, "one connection kept idle", func() bool { return db.Stats().Idle == 1 })
			},
		},
		{
			name: "SetMaxOpenConns(0): unlimited",
			opts: []pgxleak.Option{pgxleak.WithMinIdleConns(2), pgxleak.ConnMaxIdleTimeForTest(idle)},
			set:  func(db *sql.DB) { db.SetMaxOpenConns(0) },
			check: func(t *testing.T, db *sql.DB) {
				waitKept(t, db, 2)
			},
		},
		{
			name: "SetConnMaxIdleTime shorter than Open's",
			opts: []pgxleak.Option{pgxleak.WithMinIdleConns(2), pgxleak.WithWaitSampleInterval(50 * time.Millisecond)},
			set:  func(db *sql.DB) { db.SetConnMaxIdleTime(idle) },
			check: func(t *testing.T, db *sql.DB) {
				waitKept(t, db, 2)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db, _ := openTest(t, append([]pgxleak.Option{pgxleak.WithMaxOpenConns(5)}, tc.opts...)...)
			tc.set(db)
			tc.check(t, db)
		})
	}
}

// waitKept waits until database/sql's idle-time cleaner, which runs at
// most once a second, has had two chances to close the idle connections,
// then for n of them to be idle: kept by the keeper, or re-opened by it.
func waitKept(t *testing.T, db *sql.DB, n int) {
	t.Helper()
	start := time.Now()
	pgtest.WaitFor(t, 20*time.Second, "two cleaner periods", func() bool { return time.Since(start) > 2500*time.Millisecond })
	pgtest.WaitFor(t, 3*time.Second, "the minimum of idle connections kept", func() bool { return db.Stats().Idle >= n })
}
