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

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/stretchr/testify/require"
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
	if err != nil {
		t.Fatalf("pgxleak.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// relAdmin connects to the cluster as the superuser, outside any pool.
func relAdmin(t testing.TB, c *pgtest.Cluster) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgtest.WithParams(c.DSN(), map[string]string{"application_name": "pgxleak_admin"}))
	if err != nil {
		t.Fatalf("admin connection: %v", err)
	}
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
	if err := admin.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
	}
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
			t.Fatalf("tracker not balanced: InUse %d (database/sql %d), Checkouts %d, Returns %d, still out %v",
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
	rec := newLeakRecorder()
	db := relOpen(t, cl.DSN(), rec.option(), pgxleak.WithMaxOpenConns(2), pgxleak.WithLeakThreshold(5*time.Second))
	ctx := t.Context()

	pid1, err := relBackendPID(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if st := db.Stats(); st.Idle != 1 || st.InUse != 0 {
		t.Fatalf("after one query: %+v, want one idle connection", st)
	}
	relTerminate(t, admin, pid1)

	pid2, err := relBackendPID(ctx, db)
	if err != nil {
		t.Fatalf("the query after the idle connection was killed failed: %v", err)
	}
	if pid2 == pid1 {
		t.Fatalf("the query ran on the killed backend %d", pid1)
	}
	st := relBalanced(t, db)
	// The dead connection was offered to database/sql, failed its session
	// reset and was closed without ever reaching the caller: that is not a
	// checkout.
	if st.Checkouts != 2 || st.Returns != 2 {
		t.Errorf("Checkouts %d, Returns %d; want 2 and 2 (one per query, no phantom for the dead connection)", st.Checkouts, st.Returns)
	}
	if st.OpenConnections != 1 {
		t.Errorf("OpenConnections = %d, want 1: the dead connection must be closed", st.OpenConnections)
	}
	if leaks := rec.all(); len(leaks) != 0 {
		t.Errorf("leak reports: %v", leaks)
	}
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
	if _, err := relBackendPID(ctx, db); err != nil {
		t.Fatal(err)
	}
	pid1, err := relBackendPID(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	relTerminate(t, admin, pid1)
	_, err = relBackendPID(ctx, db)
	if err != nil {
		// Inside the window: the caller sees the server's own error.
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57P01" {
			if !strings.Contains(err.Error(), "conn closed") && !strings.Contains(err.Error(), "EOF") {
				t.Fatalf("query on the killed connection: %v, want SQLSTATE 57P01 or a closed connection", err)
			}
		}
		t.Logf("inside pgx's ping window the query failed as expected: %v", err)
	} // else the machine was slow enough that pgx pinged and retried
	pid3, err := relBackendPID(ctx, db)
	if err != nil {
		t.Fatalf("the next query failed too: %v", err)
	}
	if pid3 == pid1 {
		t.Fatal("the killed backend was used again")
	}
	relBalanced(t, db)
}

// TestFaultCheckedOutConnectionKilled: the backend of a connection inside a
// transaction is killed. The caller gets an error, nothing is committed,
// the connection is discarded and the tracker releases it.
func TestFaultCheckedOutConnectionKilled(t *testing.T) {
	t.Parallel()
	cl := pgtest.NewCluster(t)
	admin := relAdmin(t, cl)
	if _, err := admin.Exec(t.Context(), "CREATE TABLE killed (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	for _, during := range []bool{false, true} {
		name := "between statements"
		if during {
			name = "during a statement"
		}
		t.Run(name, func(t *testing.T) {
			rec := newLeakRecorder()
			db := relOpen(t, cl.DSN(), rec.option(), pgxleak.WithLeakThreshold(10*time.Second))
			ctx := t.Context()
			id := 1
			if during {
				id = 2
			}
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO killed VALUES ($1)", id); err != nil {
				t.Fatal(err)
			}
			pid, err := relBackendPID(ctx, tx)
			if err != nil {
				t.Fatal(err)
			}
			cos := checkouts(t, db)
			if len(cos) != 1 || cos[0].BackendPID != uint32(pid) || cos[0].TxStatus != "in transaction" ||
				!strings.HasSuffix(cos[0].Culprit.File, "reliability_fault_test.go") {
				t.Fatalf("Checkouts before the kill = %+v, want one in transaction on backend %d taken here", cos, pid)
			}

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
					t.Fatal("the statement whose backend was killed did not return")
				}
				if d := time.Since(start); d > 30*time.Second {
					t.Fatalf("the killed statement returned after %v", d)
				}
				var pgErr *pgconn.PgError
				if !errors.As(stmtErr, &pgErr) || pgErr.Code != "57P01" {
					t.Errorf("error = %v, want the server's SQLSTATE 57P01 passed through", stmtErr)
				}
			} else {
				relTerminate(t, admin, pid)
				_, stmtErr = tx.ExecContext(ctx, "INSERT INTO killed VALUES (100)")
			}
			if stmtErr == nil {
				t.Fatal("the statement on the killed connection succeeded")
			}
			t.Logf("statement error: %v", stmtErr)
			if err := tx.Commit(); err == nil {
				t.Fatal("Commit on the killed connection succeeded")
			}
			var n int
			if err := admin.QueryRow(ctx, "SELECT count(*) FROM killed WHERE id = $1", id).Scan(&n); err != nil || n != 0 {
				t.Fatalf("row %d present (%d, %v): the transaction was committed", id, n, err)
			}
			st := relBalanced(t, db)
			if st.OpenConnections != 0 {
				t.Errorf("OpenConnections = %d, want 0: the killed connection must be discarded", st.OpenConnections)
			}
			if st.Checkouts != 1 {
				t.Errorf("Checkouts = %d, want 1", st.Checkouts)
			}
			if _, err := relBackendPID(ctx, db); err != nil {
				t.Fatalf("the pool did not recover: %v", err)
			}
			relBalanced(t, db)
			if leaks := rec.all(); len(leaks) != 0 {
				t.Errorf("leak reports: %v", leaks)
			}
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
			rec := newLeakRecorder()
			// A leak threshold above the per-call deadline: any checkout that
			// outlives its call would be reported.
			db := relOpen(t, cl.DSN(), rec.option(), pgxleak.WithMaxOpenConns(10), pgxleak.WithLeakThreshold(4*time.Second))

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
			if err := cl.Stop(mode); err != nil {
				t.Fatal(err)
			}
			errsBefore := errCount.Load()
			pgtest.WaitFor(t, 30*time.Second, "errors to reach the callers while the server is down", func() bool {
				return errCount.Load() >= errsBefore+workers
			})
			if err := cl.Start(); err != nil {
				t.Fatal(err)
			}
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
			if firstOK > 5*time.Second {
				t.Errorf("the pool took %v to serve a query after the server came back", firstOK)
			}
			if len(late) > 0 {
				t.Errorf("%d calls returned later than their %v deadline + %v: %v", len(late), callTimeout, relSlack, late)
			}
			// After the restart the pool is healthy: every stale connection has
			// been discarded, so sequential queries all succeed.
			for i := range 20 {
				if _, err := relBackendPID(t.Context(), db); err != nil {
					t.Fatalf("query %d after recovery: %v", i, err)
				}
			}
			st := relBalanced(t, db)
			if st.Checkouts < uint64(okCount.Load()) {
				t.Errorf("tracker saw %d checkouts for %d successful queries", st.Checkouts, okCount.Load())
			}
			if leaks := rec.all(); len(leaks) != 0 {
				t.Errorf("leak reports during the restart: %v", leaks)
			}
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
		t.Fatal("Open warmed up 8 connections on a server that allows 5")
	}
	t.Logf("Open error (%v): %v", time.Since(start).Round(time.Millisecond), err)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "53300" {
		t.Errorf("Open error does not carry the server's SQLSTATE 53300: %v", err)
	}
	for _, want := range []string{"WithMinIdleConns", "too many clients"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open error does not say %q: %v", want, err)
		}
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
		if err != nil {
			t.Fatalf("connection %d of 5: %v", i+1, err)
		}
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
	if err == nil {
		t.Fatal("a sixth connection was opened on a server that allows 5")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the sixth checkout took %v to fail", d)
	}
	if !errors.As(err, &pgErr) || pgErr.Code != "53300" || !strings.Contains(err.Error(), "too many clients") {
		t.Errorf("sixth checkout: %v, want the server's too many clients error (53300)", err)
	}
	if st := stats(t, db); st.CheckedOut != 5 || st.Checkouts != 5 || len(checkouts(t, db)) != 5 {
		t.Errorf("tracker with 5 held and one refused: InUse %d, Checkouts %d, listed %d; want 5, 5, 5",
			st.CheckedOut, st.Checkouts, len(checkouts(t, db)))
	}
	for _, c := range held {
		_ = c.Close()
	}
	st := relBalanced(t, db)
	if st.Checkouts != 5 {
		t.Errorf("Checkouts = %d, want 5", st.Checkouts)
	}
	if _, err := relBackendPID(ctx, db); err != nil {
		t.Fatalf("query after the connections came back: %v", err)
	}
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
	fc := &fakeConnector{gate: make(chan struct{})}
	type result struct {
		db  *sql.DB
		err error
	}
	opened := make(chan result, 1)
	go func() {
		db, err := pgxleak.OpenDB(fc, pgxleak.WithMaxOpenConns(4), pgxleak.WithMinIdleConns(2),
			pgxleak.WithConnMaxIdleTime(20*time.Millisecond), // keep-idle every 10 ms
			pgxleak.WithLogger(quiet))
		opened <- result{db, err}
	}()
	pgtest.WaitFor(t, 10*time.Second, "the warm-up's two connection attempts", func() bool { return fc.attempts.Load() >= 2 })
	time.Sleep(100 * time.Millisecond) // ten keep-idle periods in which nothing else may connect
	if n := fc.attempts.Load(); n != 2 {
		t.Errorf("%d connection attempts during Open's warm-up of 2: the keep-idle task ran alongside it", n)
	}
	close(fc.gate)
	r := <-opened
	if r.err != nil {
		t.Fatalf("Open: %v", r.err)
	}
	_ = r.db.Close()
}
