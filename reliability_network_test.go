package pgxleak_test

// Fault tests (issue 7, RELIABILITY.md): every one runs against a private
// throwaway cluster (pgtest.NewCluster) that it may kill, restart or cut
// off, never against the shared server.

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/faultproxy"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestFaultNetwork runs the pool through a TCP proxy inside the test
// (internal/faultproxy, toxiproxy's toxics without its server) and checks
// that every call under latency, black holes, resets and a bandwidth limit
// returns by its context deadline, that the tracker stays balanced, and
// that no goroutine outlives the test. It is not parallel, so that the
// goroutine check sees only its own goroutines.
func TestFaultNetwork(t *testing.T) {
	before := goleak.IgnoreCurrent()
	cl := pgtest.NewCluster(t)
	proxy, err := faultproxy.New(fmt.Sprintf("127.0.0.1:%d", cl.Port()))
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = proxy.Close()
		goleak.VerifyNone(t, before)
	})
	base := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", proxy.Addr())

	// timed runs f with a context that ends after d and returns how long
	// it took and f's error.
	timed := func(d time.Duration, f func(ctx context.Context) error) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		start := time.Now()
		err := f(ctx)
		return time.Since(start), err
	}
	query := func(db *sql.DB, q string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			var s string
			return db.QueryRowContext(ctx, q).Scan(&s)
		}
	}
	// byDeadline asserts that a call failed at its deadline d: not before
	// (the fault was in effect) and not much after (nothing hung).
	byDeadline := func(t *testing.T, what string, err error, took, d time.Duration) {
		t.Helper()
		require.Error(t, err, "%s succeeded through the fault in %v", what, took)
		require.True(t, took >= d*9/10 && took <= d+relSlack, "%s returned after %v, want about its %v deadline: %v", what, took, d, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded, what)
	}
	// quick asserts that a call failed well before its deadline.
	quick := func(t *testing.T, what string, err error, took time.Duration) {
		t.Helper()
		require.Error(t, err, "%s succeeded through the fault", what)
		require.LessOrEqual(t, took, 2*time.Second, "%s: the time to fail: %v", what, err)
	}
	open := func(t *testing.T, opts ...pgxleak.Option) *sql.DB {
		t.Helper()
		proxy.Clear()
		db := relOpen(t, base, opts...)
		require.NoError(t, db.PingContext(t.Context()))
		t.Cleanup(func() {
			// Heal the network first, so pgx's cleanup of connections it
			// abandoned (a cancel request and a Terminate, up to 15 s on a
			// black hole) finishes at once.
			proxy.Clear()
			relBalanced(t, db)
			_ = db.Close()
		})
		return db
	}

	t.Run("latency", func(t *testing.T) {
		db := open(t)
		proxy.Set(faultproxy.Toxics{Latency: 200 * time.Millisecond}) // 400 ms per round trip
		took, err := timed(150*time.Millisecond, query(db, "SELECT 'x'"))
		byDeadline(t, "query under 400ms round trips with a 150ms deadline", err, took, 150*time.Millisecond)
		took, err = timed(10*time.Second, query(db, "SELECT 'x'"))
		require.NoError(t, err, "query with a 10s deadline")
		require.GreaterOrEqual(t, took, 400*time.Millisecond, "query with a 10s deadline: at least one 400ms round trip")
	})

	t.Run("reset_peer", func(t *testing.T) {
		db := open(t)
		conn, err := db.Conn(t.Context())
		require.NoError(t, err)
		proxy.Set(faultproxy.Toxics{ResetPeer: true})
		took, err := timed(10*time.Second, conn.PingContext)
		quick(t, "ping on a reset connection", err, took)
		t.Logf("reset connection: %v", err)
		_ = conn.Close()
		took, err = timed(10*time.Second, query(db, "SELECT 'x'"))
		quick(t, "query while new connections are reset", err, took)
		proxy.Clear()
		_, err = timed(10*time.Second, query(db, "SELECT 'x'"))
		require.NoError(t, err, "after the resets stopped")
		assert.Equal(t, 1, db.Stats().OpenConnections, "OpenConnections: reset connections must be discarded")
	})

	t.Run("timeout", func(t *testing.T) {
		rec := &leaktest.Recorder{}
		db := open(t, rec.Option(), pgxleak.WithLeakThreshold(time.Minute))
		ctx := t.Context()
		_, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS blackholed (id int)")
		require.NoError(t, err)
		// A transaction begun before the black hole, committed into it:
		// driver.Tx.Commit takes no context, but pgx commits with the
		// BeginTx one.
		txCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		tx, err := db.BeginTx(txCtx, nil)
		require.NoError(t, err)
		_, err = tx.ExecContext(txCtx, "INSERT INTO blackholed VALUES (1)")
		require.NoError(t, err)
		// A connection held across the black hole, for Drain below.
		held, err := db.Conn(ctx)
		require.NoError(t, err)
		defer held.Close()
		require.NoError(t, held.PingContext(ctx))

		proxy.Set(faultproxy.Toxics{Timeout: true})
		start := time.Now()
		err = tx.Commit()
		require.Error(t, err, "Commit into a black hole")
		require.LessOrEqual(t, time.Since(start), 500*time.Millisecond+relSlack, "Commit into a black hole: an error by the BeginTx deadline")
		took, err := timed(300*time.Millisecond, query(db, "SELECT 'x'"))
		byDeadline(t, "query (on a new connection) into a black hole", err, took, 300*time.Millisecond)
		took, err = timed(300*time.Millisecond, db.PingContext)
		byDeadline(t, "ping (on a new connection) into a black hole", err, took, 300*time.Millisecond)

		// Drain cannot wait longer than its context for a connection stuck
		// in a black hole, and names the culprit.
		const stuckSQL = "SELECT 'stuck in the black hole'"
		stuck := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := held.ExecContext(ctx, stuckSQL)
			stuck <- err
		}()
		pgtest.WaitFor(t, 5*time.Second, "the stuck statement", func() bool {
			cos := checkouts(t, db)
			return len(cos) == 1 && cos[0].LastStatement == stuckSQL
		})
		took, err = timed(300*time.Millisecond, func(ctx context.Context) error { return pgxleak.Drain(ctx, db) })
		var le *pgxleak.LeakError
		require.ErrorAs(t, err, &le, "Drain with a connection in a black hole")
		require.Len(t, le.Checkouts, 1, "Drain with a connection in a black hole")
		require.LessOrEqual(t, took, 300*time.Millisecond+relSlack, "Drain with a connection in a black hole: a LeakError by its deadline")
		c := le.Checkouts[0]
		assert.True(t, strings.HasSuffix(c.Culprit.File, "reliability_network_test.go"), "Drain's report: culprit %v", c.Culprit)
		assert.Equal(t, stuckSQL, c.LastStatement, "Drain's report")
		assert.ErrorIs(t, err, context.DeadlineExceeded, "the Drain error wraps the deadline")
		select {
		case err := <-stuck:
			assert.Error(t, err, "the stuck statement succeeded")
		case <-time.After(2*time.Second + relSlack):
			require.FailNow(t, "the stuck statement outlived its 2s deadline")
		}
		_ = held.Close()
		leaks := rec.All()
		if assert.Len(t, leaks, 1, "reports: the one still_out from Drain") {
			assert.Equal(t, pgxleak.LeakStillOut, leaks[0].Kind, "reports: the one still_out from Drain")
		}
		proxy.Clear()
		// The commit never reached the server.
		admin := relAdmin(t, cl)
		var n int
		assert.NoError(t, admin.QueryRow(ctx, "SELECT count(*) FROM blackholed").Scan(&n))
		assert.Zero(t, n, "rows committed into the black hole")
	})

	t.Run("timeout closing", func(t *testing.T) {
		db := open(t)
		proxy.Set(faultproxy.Toxics{Timeout: true, CloseAfter: 200 * time.Millisecond})
		took, err := timed(10*time.Second, query(db, "SELECT 'x'"))
		require.Error(t, err, "query through a black hole that closes after 200ms")
		require.True(t, took >= 150*time.Millisecond && took <= 200*time.Millisecond+relSlack,
			"query through a black hole that closes after 200ms: %v after %v", err, took)
	})

	t.Run("open into a black hole", func(t *testing.T) {
		proxy.Set(faultproxy.Toxics{Timeout: true})
		defer proxy.Clear()
		// Open takes no context: connect_timeout bounds its warm-up.
		start := time.Now()
		db, err := pgxleak.Open("pgx", base+"&connect_timeout=1", pgxleak.WithMinIdleConns(2),
			pgxleak.WithLogger(quiet))
		took := time.Since(start)
		if err == nil {
			_ = db.Close()
		}
		require.Error(t, err, "Open warmed up connections through a black hole")
		require.ErrorContains(t, err, "WithMinIdleConns")
		require.True(t, took >= 900*time.Millisecond && took <= time.Second+relSlack,
			"Open: %v after %v, want the error after the 1s connect_timeout", err, took)
	})

	// database/sql opens connections for waiting callers on one background
	// goroutine, with a context only Close ends. A connection attempt the
	// network swallows must not hold it forever: pgxleak bounds every
	// connect without a deadline by 30 s, and connect_timeout in the DSN
	// by less. The 30 s case runs with PGXLEAK_FULL=1.
	t.Run("background open into a black hole", func(t *testing.T) {
		dsn, bound := base+"&connect_timeout=1", time.Second
		if relFull() {
			dsn, bound = base, 30*time.Second
		}
		proxy.Clear()
		db := relOpen(t, dsn, pgxleak.WithMaxOpenConns(1))
		ctx := t.Context()
		held, err := db.Conn(ctx)
		require.NoError(t, err)
		defer held.Close()
		require.NoError(t, held.PingContext(ctx))
		waiter := make(chan error, 1)
		go func() {
			_, err := timed(bound+time.Minute, query(db, "SELECT 'x'"))
			waiter <- err
		}()
		pgtest.WaitFor(t, 10*time.Second, "a caller waiting for the only connection", func() bool { return db.Stats().WaitCount >= 1 })

		// The held connection dies in the black hole; database/sql
		// discards it and asks its opener for one for the waiter.
		proxy.Set(faultproxy.Toxics{Timeout: true})
		accepted := proxy.Accepted()
		_, err = timed(200*time.Millisecond, held.PingContext)
		require.Error(t, err, "ping through the black hole succeeded")
		dropped := proxy.Dropped()
		_ = held.Close()
		pgtest.WaitFor(t, 10*time.Second, "the opener's connection attempt to vanish", func() bool {
			return proxy.Accepted() > accepted && proxy.Dropped() > dropped
		})
		swallowed := time.Now()
		proxy.Clear() // the network is back, but that attempt is lost

		select {
		case err := <-waiter:
			took := time.Since(swallowed)
			t.Logf("waiter: %v after %v", err, took.Round(time.Millisecond))
			require.LessOrEqual(t, took, bound+relSlack, "the waiter is served within the %v connect bound after the lost attempt", bound)
		case <-time.After(bound + relSlack):
			require.FailNowf(t, "the waiter still waits", "the waiter still waits %v after the opener's attempt was lost", bound+relSlack)
		}
		_, err = timed(10*time.Second, query(db, "SELECT 'x'"))
		require.NoError(t, err, "the pool did not recover")
		relBalanced(t, db)
	})

	t.Run("bandwidth", func(t *testing.T) {
		db := open(t)
		proxy.Set(faultproxy.Toxics{Bandwidth: 256 << 10})
		took, err := timed(10*time.Second, query(db, "SELECT repeat('x', 128*1024)"))
		require.NoError(t, err, "128 KiB at 256 KiB/s")
		require.GreaterOrEqual(t, took, 350*time.Millisecond, "128 KiB at 256 KiB/s: success after about 0.5s")
		took, err = timed(300*time.Millisecond, query(db, "SELECT repeat('x', 8*1024*1024)"))
		byDeadline(t, "8 MiB at 256 KiB/s with a 300ms deadline", err, took, 300*time.Millisecond)
	})
}
