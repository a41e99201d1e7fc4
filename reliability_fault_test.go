package pgxleak_test

// Fault tests (issue 7, RELIABILITY.md): every one runs against a private
// throwaway cluster (pgtest.NewCluster) that it may kill, restart or cut
// off, never against the shared server.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// relSlack is how late a call may return after its context deadline before
// it counts as hanging: generous for a loaded 2-core machine under -race,
// and far below any of the hangs it guards against (pgx's 15 s cleanup,
// the 30 s warm-up timeout, a black hole's forever).
const relSlack = 1500 * time.Millisecond

// relOpen opens a tracked pool on dsn with a quiet logger, closed when t
// ends.
func relOpen(t testing.TB, dsn string, opts ...pgxleak.Option) *sql.DB {
	t.Helper()
	opts = append([]pgxleak.Option{pgxleak.WithLogger(quiet)}, opts...)
	db, err := pgxleak.Open("pgx", dsn, opts...)
	require.NoError(t, err, "pgxleak.Open")
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// relAdmin connects to the cluster as the superuser, outside any pool.
func relAdmin(t testing.TB, c *pgtest.Cluster) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgtest.WithParams(c.DSN(), map[string]string{"application_name": "pgxleak_admin"}))
	require.NoError(t, err, "admin connection")
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// relTerminate kills backend pid with pg_terminate_backend and waits until
// it is gone from pg_stat_activity.
func relTerminate(t testing.TB, admin *pgx.Conn, pid int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ok bool
	require.NoError(t, admin.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok), "pg_terminate_backend(%d)", pid)
	require.True(t, ok, "pg_terminate_backend(%d)", pid)
	pgtest.WaitFor(t, 10*time.Second, fmt.Sprintf("backend %d to exit", pid), func() bool {
		var n int
		_ = admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n)
		return n == 0
	})
}

// relBalanced waits until the tracker and database/sql agree that nothing
// is checked out and every checkout was matched by a return, and fails t
// with the numbers if that does not happen within the deadline.
func relBalanced(t testing.TB, db *sql.DB) pgxleak.PoolStats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := stats(t, db)
		cos := checkouts(t, db)
		if st.CheckedOut == 0 && st.DBStats.InUse == 0 && st.Checkouts == st.Returns && len(cos) == 0 {
			return st
		}
		if time.Now().After(deadline) {
			require.FailNowf(t, "tracker not balanced", "InUse %d (database/sql %d), Checkouts %d, Returns %d, still out %v",
				st.InUse, st.DBStats.InUse, st.Checkouts, st.Returns, cos)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// relBackendPID returns the server process behind the next checkout.
func relBackendPID(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (int, error) {
	var pid int
	err := q.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid)
	return pid, err
}

// TestFaultIdleConnectionKilled: the backend of an idle pooled connection is
// killed; the next query succeeds on a fresh connection, and the tracker
// counts exactly the checkouts the caller made, with nothing left out.
func TestFaultIdleConnectionKilled(t *testing.T) {
	t.Parallel()
	cl := pgtest.NewCluster(t)
	admin := relAdmin(t, cl)
	rec := &leaktest.Recorder{}
	db := relOpen(t, cl.DSN(), rec.Option(), pgxleak.WithMaxOpenConns(2), pgxleak.WithLeakThreshold(5*time.Second))
	ctx := t.Context()

	pid1, err := relBackendPID(ctx, db)
	require.NoError(t, err)
	dst := db.Stats()
	require.Equal(t, 1, dst.Idle, "after one query: one idle connection")
	require.Zero(t, dst.InUse, "after one query: none in use")
	relTerminate(t, admin, pid1)

	pid2, err := relBackendPID(ctx, db)
	require.NoError(t, err, "the query after the idle connection was killed failed")
	require.NotEqual(t, pid1, pid2, "the query ran on the killed backend")
	st := relBalanced(t, db)
	// The dead connection was offered to database/sql, failed its session
	// reset and was closed without ever reaching the caller: that is not a
	// checkout.
	assert.EqualValues(t, 2, st.Checkouts, "checkouts: one per query, no phantom for the dead connection")
	assert.EqualValues(t, 2, st.Returns, "returns: one per query, no phantom for the dead connection")
	assert.Equal(t, 1, st.OpenConnections, "the dead connection must be closed")
	assert.Empty(t, rec.All(), "leak reports")
}

// TestFaultIdleConnectionKilledRightAfterUse covers the one window pgx
// leaves open: it pings an idle connection on checkout only when the last
// check was more than a second ago, so a backend killed within that second
// is discovered by the query itself. That query fails with the server's
// termination error (it cannot be retried: it was sent); the connection is
// then discarded and the next query runs on a fresh one.
func TestFaultIdleConnectionKilledRightAfterUse(t *testing.T) {
	t.Parallel()
	cl := pgtest.NewCluster(t)
	admin := relAdmin(t, cl)
	db := relOpen(t, cl.DSN(), pgxleak.WithMaxOpenConns(1))
	ctx := t.Context()
	// Two checkouts: the second goes through pgx's session reset, which
	// starts its one-second no-ping window.
	_, err := relBackendPID(ctx, db)
	require.NoError(t, err)
	pid1, err := relBackendPID(ctx, db)
	require.NoError(t, err)
	relTerminate(t, admin, pid1)
	_, err = relBackendPID(ctx, db)
	if err != nil {
		// Inside the window: the caller sees the server's own error.
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57P01" {
			require.True(t, strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "EOF"),
				"query on the killed connection: %v, want SQLSTATE 57P01 or a closed connection", err)
		}
		t.Logf("inside pgx's ping window the query failed as expected: %v", err)
	} // else the machine was slow enough that pgx pinged and retried
	pid3, err := relBackendPID(ctx, db)
	require.NoError(t, err, "the next query failed too")
	require.NotEqual(t, pid1, pid3, "the killed backend was used again")
	relBalanced(t, db)
}

// TestFaultCheckedOutConnectionKilled: the backend of a connection inside a
// transaction is killed. The caller gets an error, nothing is committed,
// the connection is discarded and the tracker releases it.
func TestFaultCheckedOutConnectionKilled(t *testing.T) {
	t.Parallel()
	cl := pgtest.NewCluster(t)
	admin := relAdmin(t, cl)
	_, err := admin.Exec(t.Context(), "CREATE TABLE killed (id int PRIMARY KEY)")
	require.NoError(t, err)
	for _, during := range []bool{false, true} {
		name := "between statements"
		if during {
			name = "during a statement"
		}
		t.Run(name, func(t *testing.T) {
			rec := &leaktest.Recorder{}
			db := relOpen(t, cl.DSN(), rec.Option(), pgxleak.WithLeakThreshold(10*time.Second))
			ctx := t.Context()
			id := 1
			if during {
				id = 2
			}
			tx, err := db.BeginTx(ctx, nil)
			require.NoError(t, err)
			_, err = tx.ExecContext(ctx, "INSERT INTO killed VALUES ($1)", id)
			require.NoError(t, err)
			pid, err := relBackendPID(ctx, tx)
			require.NoError(t, err)
			cos := checkouts(t, db)
			require.Len(t, cos, 1, "checkouts before the kill")
			require.Equal(t, uint32(pid), cos[0].BackendPID, "the checkout's backend")
			require.Equal(t, "in transaction", cos[0].TxStatus)
			require.True(t, strings.HasSuffix(cos[0].Culprit.File, "reliability_fault_test.go"), "the checkout was taken here: %+v", cos[0].Culprit)

			var stmtErr error
			if during {
				done := make(chan error, 1)
				start := time.Now()
				go func() {
					_, err := tx.ExecContext(ctx, "SELECT pg_sleep(60)")
					done <- err
				}()
				pgtest.WaitFor(t, 10*time.Second, "pg_sleep to start", func() bool {
					var n int
					_ = admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid).Scan(&n)
					return n == 1
				})
				relTerminate(t, admin, pid)
				select {
				case stmtErr = <-done:
				case <-time.After(10 * time.Second):
					require.FailNow(t, "the statement whose backend was killed did not return")
				}
				require.LessOrEqual(t, time.Since(start), 30*time.Second, "the killed statement's time to return")
				var pgErr *pgconn.PgError
				if assert.ErrorAs(t, stmtErr, &pgErr, "the server's error passes through") {
					assert.Equal(t, "57P01", pgErr.Code, "the server's SQLSTATE")
				}
			} else {
				relTerminate(t, admin, pid)
				_, stmtErr = tx.ExecContext(ctx, "INSERT INTO killed VALUES (100)")
			}
			require.Error(t, stmtErr, "the statement on the killed connection succeeded")
			t.Logf("statement error: %v", stmtErr)
			require.Error(t, tx.Commit(), "Commit on the killed connection succeeded")
			var n int
			require.NoError(t, admin.QueryRow(ctx, "SELECT count(*) FROM killed WHERE id = $1", id).Scan(&n))
			require.Zero(t, n, "row %d present: the transaction was committed", id)
			st := relBalanced(t, db)
			assert.Zero(t, st.OpenConnections, "the killed connection must be discarded")
			assert.EqualValues(t, 1, st.Checkouts, "checkouts")
			_, err = relBackendPID(ctx, db)
			require.NoError(t, err, "the pool did not recover")
			relBalanced(t, db)
			assert.Empty(t, rec.All(), "leak reports")
		})
	}
}

// TestFaultServerRestart: the server is stopped and started again while 50
// goroutines run queries. Every error reaches its caller within the call's
// deadline, the pool serves queries again within seconds of the server's
// return, and the tracker's books balance.
func TestFaultServerRestart(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"immediate", "fast"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			cl := pgtest.NewCluster(t)
			rec := &leaktest.Recorder{}
			// A leak threshold above the per-call deadline: any checkout that
			// outlives its call would be reported.
			db := relOpen(t, cl.DSN(), rec.Option(), pgxleak.WithMaxOpenConns(10), pgxleak.WithLeakThreshold(4*time.Second))

			const workers, callTimeout = 50, 2 * time.Second
			var (
				okCount, errCount atomic.Int64
				lateMu            sync.Mutex
				late              []time.Duration
				errSample         sync.Map
				stop              = make(chan struct{})
				wg                sync.WaitGroup
			)
			for range workers {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
						start := time.Now()
						var one int
						err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
						d := time.Since(start)
						cancel()
						if d > callTimeout+relSlack {
							lateMu.Lock()
							late = append(late, d)
							lateMu.Unlock()
						}
						if err != nil {
							errCount.Add(1)
							errSample.Store(strings.SplitN(err.Error(), "\n", 2)[0], true)
							// Back off a little: the server is gone, and 50
							// goroutines must not spin the CPU.
							select {
							case <-stop:
								return
							case <-time.After(10 * time.Millisecond):
							}
						} else {
							okCount.Add(1)
						}
					}
				})
			}
			stopped := false
			defer func() {
				if !stopped {
					close(stop)
					wg.Wait()
				}
			}()

			pgtest.WaitFor(t, 30*time.Second, "200 queries before the restart", func() bool { return okCount.Load() >= 200 })
			require.NoError(t, cl.Stop(mode))
			errsBefore := errCount.Load()
			pgtest.WaitFor(t, 30*time.Second, "errors to reach the callers while the server is down", func() bool {
				return errCount.Load() >= errsBefore+workers
			})
			require.NoError(t, cl.Start())
			back := time.Now()
			okAtStart := okCount.Load()
			pgtest.WaitFor(t, 10*time.Second, "a query to succeed after the restart", func() bool { return okCount.Load() > okAtStart })
			firstOK := time.Since(back)
			pgtest.WaitFor(t, 20*time.Second, "500 queries after the restart", func() bool { return okCount.Load() >= okAtStart+500 })
			recovered := time.Since(back)
			close(stop)
			wg.Wait()
			stopped = true

			var samples []string
			errSample.Range(func(k, _ any) bool { samples = append(samples, k.(string)); return true })
			t.Logf("%s restart: %d ok, %d errors; first success %v after the server was back, 500 more by %v; errors seen: %q",
				mode, okCount.Load(), errCount.Load(), firstOK.Round(time.Millisecond), recovered.Round(time.Millisecond), samples)
			assert.LessOrEqual(t, firstOK, 5*time.Second, "the time the pool took to serve a query after the server came back")
			assert.Empty(t, late, "calls returned later than their %v deadline + %v", callTimeout, relSlack)
			// After the restart the pool is healthy: every stale connection has
			// been discarded, so sequential queries all succeed.
			for i := range 20 {
				_, err := relBackendPID(t.Context(), db)
				require.NoError(t, err, "query %d after recovery", i)
			}
			st := relBalanced(t, db)
			assert.GreaterOrEqual(t, st.Checkouts, uint64(okCount.Load()), "checkouts tracked: at least one per successful query")
			assert.Empty(t, rec.All(), "leak reports during the restart")
		})
	}
}

// TestFaultMaxConnections: the server is at max_connections. Open with more
// warm connections than the server allows fails with the server's error and
// the option that asked for them; checkouts beyond the limit fail with the
// server's "too many clients" error instead of hanging, and are not
// counted.
func TestFaultMaxConnections(t *testing.T) {
	t.Parallel()
	cl := pgtest.NewCluster(t, pgtest.Setting("max_connections", "5"), pgtest.Setting("superuser_reserved_connections", "0"))
	ctx := t.Context()

	start := time.Now()
	db, err := pgxleak.Open("pgx", cl.DSN(), pgxleak.WithMaxOpenConns(10), pgxleak.WithMinIdleConns(8),
		pgxleak.WithLogger(quiet))
	if err == nil {
		_ = db.Close()
	}
	require.Error(t, err, "Open warmed up 8 connections on a server that allows 5")
	t.Logf("Open error (%v): %v", time.Since(start).Round(time.Millisecond), err)
	var pgErr *pgconn.PgError
	if assert.ErrorAs(t, err, &pgErr, "Open's error carries the server's") {
		assert.Equal(t, "53300", pgErr.Code, "Open's error carries the server's SQLSTATE")
	}
	for _, want := range []string{"WithMinIdleConns", "too many clients"} {
		assert.Contains(t, err.Error(), want)
	}
	// The failed Open closed the connections it did get: all five slots are
	// free again (this is checked from inside one of them).
	pgtest.WaitFor(t, 10*time.Second, "the failed Open's connections to close", func() bool {
		c, err := pgx.Connect(ctx, cl.DSN())
		if err != nil {
			return false
		}
		defer c.Close(ctx)
		var n int
		_ = c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'").Scan(&n)
		return n == 1
	})

	db = relOpen(t, cl.DSN(), pgxleak.WithMaxOpenConns(10))
	var held []*sql.Conn
	for i := range 5 {
		c, err := db.Conn(ctx)
		if err == nil {
			err = c.PingContext(ctx)
		}
		require.NoError(t, err, "connection %d of 5", i+1)
		held = append(held, c)
		if i > 0 {
			continue
		}
		// The probe above closed its connection, but the server frees its
		// slot only once that backend has exited, a moment later: until
		// then the fifth connection would be refused. Seen from the first:
		// wait until every client backend is one of the pool's.
		pgtest.WaitFor(t, 10*time.Second, "the probe's backend to exit", func() bool {
			var n int
			require.NoError(t, c.QueryRowContext(ctx, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'").Scan(&n))
			return n == db.Stats().OpenConnections
		})
	}
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start = time.Now()
	_, err = db.Conn(callCtx)
	require.Error(t, err, "a sixth connection was opened on a server that allows 5")
	assert.LessOrEqual(t, time.Since(start), 5*time.Second, "the sixth checkout's time to fail")
	if assert.ErrorAs(t, err, &pgErr, "sixth checkout: the server's error") {
		assert.Equal(t, "53300", pgErr.Code, "sixth checkout: the server's SQLSTATE")
	}
	assert.Contains(t, err.Error(), "too many clients")
	pst := stats(t, db)
	assert.EqualValues(t, 5, pst.CheckedOut, "checked out, with 5 held and one refused")
	assert.EqualValues(t, 5, pst.Checkouts, "checkouts, with 5 held and one refused")
	assert.Len(t, checkouts(t, db), 5, "checkouts listed, with 5 held and one refused")
	for _, c := range held {
		_ = c.Close()
	}
	st := relBalanced(t, db)
	assert.EqualValues(t, 5, st.Checkouts, "checkouts")
	_, err = relBackendPID(ctx, db)
	require.NoError(t, err, "query after the connections came back")
	relBalanced(t, db)
}

// TestFaultSlowWarmUp: while Open warms connections up, slowly (a remote
// server, TLS, scram), the pool's keep-idle task must not run: both hold
// the connections they got while waiting for the rest, so two of them at
// once can deadlock a small pool until the 30 s warm-up timeout (fuzzing
// found it). Here the connections only open when the test says so; over
// ten keep-idle periods, only the warm-up's two may be attempted.
func TestFaultSlowWarmUp(t *testing.T) {
	t.Parallel()
	fc := &testdriver.Connector{Gate: make(chan struct{})}
	type result struct {
		db  *sql.DB
		err error
	}
	opened := make(chan result, 1)
	go func() {
		db, err := pgxleak.OpenDB(fc, pgxleak.WithMaxOpenConns(4), pgxleak.WithMinIdleConns(2),
			pgxleak.ConnMaxIdleTimeForTest(20*time.Millisecond), // keep-idle every 10 ms
			pgxleak.WithLogger(quiet))
		opened <- result{db, err}
	}()
	pgtest.WaitFor(t, 10*time.Second, "the warm-up's two connection attempts", func() bool { return fc.Attempts.Load() >= 2 })
	time.Sleep(100 * time.Millisecond) // ten keep-idle periods in which nothing else may connect
	assert.EqualValues(t, 2, fc.Attempts.Load(), "connection attempts during Open's warm-up of 2: the keep-idle task ran alongside it")
	close(fc.Gate)
	r := <-opened
	require.NoError(t, r.err, "Open")
	_ = r.db.Close()
}
