package pgxleak_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/faultproxy"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// leakLockedTx leaks, from a goroutine that then exits, a transaction that
// holds the row id = 1 of t FOR UPDATE; it returns the Tx (to end it) and
// the line that began it.
func leakLockedTx(t *testing.T, db *sql.DB) (*sql.Tx, site) {
	t.Helper()
	type leaked struct {
		tx *sql.Tx
		at site
	}
	got := make(chan leaked)
	go func() {
		var l leaked
		var err error
		l.at = lineBelow()
		l.tx, err = db.Begin()
		if err == nil {
			_, err = l.tx.Exec("SELECT id FROM t WHERE id = 1 FOR UPDATE")
		}
		assert.NoError(t, err)
		got <- l
	}()
	l := <-got
	return l.tx, l.at
}

// TestServerViewBlockedByLeak: a checkout blocked on a row lock held by a
// leaked transaction is told apart from the leak: it waits on a lock held
// by the leak's PID, joined back to the leak's line; the leak is idle in
// transaction.
func TestServerViewBlockedByLeak(t *testing.T) {
	db, dsn := openTest(t)
	pgtest.Exec(t, dsn, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	leak, leakAt := leakLockedTx(t, db)
	defer leak.Rollback()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	blockedAt := make(chan site, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		blockedAt <- lineBelow()
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer tx.Rollback()
		_, _ = tx.ExecContext(ctx, "SELECT id FROM t WHERE id = 1 FOR UPDATE") // blocks until cancelled
	}()
	at := <-blockedAt
	in := inspectUntil(t, db, "the second checkout waiting on the leak's lock", func(in pgxleak.Inspection) bool {
		c, ok := checkoutAtLine(in, at)
		return ok && c.Server != nil && c.Server.WaitEventType == "Lock"
	})
	first, _ := checkoutAtLine(in, leakAt)
	second, _ := checkoutAtLine(in, at)
	if first.Server == nil || first.Server.State != "idle in transaction" || !slices.Contains(first.Server.Blocking, second.BackendPID) {
		t.Errorf("the leak's server view %+v: want idle in transaction, blocking PID %d", first.Server, second.BackendPID)
	}
	s := second.Server
	if !slices.Contains(s.BlockedBy, first.BackendPID) || s.Culprits[first.BackendPID].Line != leakAt.line {
		t.Errorf("the blocked checkout's server view %+v: want blocked by PID %d, checked out at %v", s, first.BackendPID, leakAt)
	}
	want := "server: active, waiting on a lock (transactionid) held by PID " + strconv.Itoa(int(first.BackendPID)) + " (checked out at " + leakAt.short() + ")"
	if !strings.Contains(second.String(), want) {
		t.Errorf("blocked checkout %q: want %q", second.String(), want)
	}
	want = "server: idle in transaction, holding locks that block PID " + strconv.Itoa(int(second.BackendPID)) + " (checked out at " + at.short() + ")"
	if !strings.Contains(first.String(), want) {
		t.Errorf("leak %q: want %q", first.String(), want)
	}
	cancel()
	<-done
}

// TestDrainTerminateStillOut: after Drain with TerminateStillOut, the
// leaked transaction's row lock is released, and the report says which
// backend was terminated.
func TestDrainTerminateStillOut(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, dsn := openTest(t, rec.Option())
	pgtest.Exec(t, dsn, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	leak, leakAt := leakLockedTx(t, db)
	defer leak.Rollback() // the terminated connection comes back here, and is discarded

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := pgxleak.Drain(ctx, db, pgxleak.TerminateStillOut())
	var le *pgxleak.LeakError
	if !errors.As(err, &le) || len(le.Checkouts) != 1 {
		t.Fatalf("Drain: %v, want a LeakError with one checkout", err)
	}
	if c := le.Checkouts[0]; !c.Terminated || c.Culprit.Line != leakAt.line || !strings.Contains(c.String(), "; backend terminated") {
		t.Errorf("still out: %q (terminated %v), want the leak at %v, terminated", c.String(), c.Terminated, leakAt)
	}
	if len(le.Notes) != 0 {
		t.Errorf("notes %q, want none", le.Notes)
	}
	r := rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut })
	if !r.Terminated {
		t.Errorf("still-out report %q: want it marked terminated", r.String())
	}
	if n := pgxleak.Stats(db).Terminated; n != 1 {
		t.Errorf("Stats.Terminated = %d, want 1", n)
	}

	// A new transaction on a new connection can lock the row (the server
	// ends the backend asynchronously: NOWAIT until it has).
	c, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	defer c.Close(context.Background())
	pgtest.WaitFor(t, 5*time.Second, "the row lock released", func() bool {
		tx, err := c.Begin(context.Background())
		require.NoError(t, err)
		defer tx.Rollback(context.Background())
		_, err = tx.Exec(context.Background(), "SELECT id FROM t WHERE id = 1 FOR UPDATE NOWAIT")
		return err == nil
	})
}

// TestTerminateDiscardsOnReturn: a connection whose backend was terminated
// is discarded when it comes back, even when nothing used it since (pgx
// has not noticed the closed socket yet).
func TestTerminateDiscardsOnReturn(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(1))
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	require.NoError(t, conn.PingContext(ctx))
	cs := pgxleak.Checkouts(db)
	if len(cs) != 1 || cs[0].BackendPID == 0 {
		t.Fatalf("checkouts %+v, want one with a backend PID", cs)
	}
	pid := cs[0].BackendPID
	if err := pgxleak.Terminate(ctx, db, pid+100000); err == nil || !strings.Contains(err.Error(), "not a connection checked out of this pool") {
		t.Errorf("Terminate of a PID not ours: %v", err)
	}
	require.NoError(t, pgxleak.Terminate(ctx, db, pid), "Terminate")
	require.NoError(t, conn.Close())
	if n := db.Stats().OpenConnections; n != 0 {
		t.Errorf("%d connections open after the terminated one came back, want 0 (discarded)", n)
	}
	var got uint32
	if err := db.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&got); err != nil {
		t.Fatalf("the next query: %v (the terminated connection was handed out again?)", err)
	}
	if got == pid {
		t.Errorf("the terminated backend %d was reused", pid)
	}
	if st := pgxleak.Stats(db); st.Terminated != 1 {
		t.Errorf("Stats.Terminated = %d, want 1", st.Terminated)
	}
}

// TestServerViewRefused: a server at max_connections refuses the side
// connection; the report still comes, and says why the view is missing.
func TestServerViewRefused(t *testing.T) {
	cl := pgtest.NewCluster(t, pgtest.Setting("max_connections", "2"), pgtest.Setting("superuser_reserved_connections", "0"))
	rec := &leaktest.Recorder{}
	db, err := pgxleak.Open("pgx", cl.DSN(), rec.Option(), pgxleak.WithMaxOpenConns(2), pgxleak.WithLogger(quiet))
	require.NoError(t, err)
	defer db.Close()
	ctx := context.Background()
	for range 2 {
		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer tx.Rollback()
		_, err = tx.ExecContext(ctx, "SELECT 1")
		require.NoError(t, err)
	}
	start := time.Now()
	in, err := pgxleak.Inspect(ctx, db)
	require.NoError(t, err)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Inspect took %v with the server refusing; it must stay bounded", took)
	}
	want := "server view unavailable: FATAL: sorry, too many clients already (SQLSTATE 53300)"
	if !slices.Contains(in.Notes, want) {
		t.Errorf("notes %q, want %q", in.Notes, want)
	}
	if len(in.Checkouts) != 2 || in.Checkouts[0].Server != nil || in.Checkouts[0].Holder == nil {
		t.Errorf("checkouts %+v: want two, with holders and no server view", in.Checkouts)
	}
	require.NoError(t, db.Close())
	r := rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut })
	if !slices.Contains(r.Notes, want) || strings.Contains(strings.Join(r.Notes, " "), "postgres@") {
		t.Errorf("report notes %q: want %q, without credentials", r.Notes, want)
	}
}

// queryRecorder is a pgx tracer that records every statement it sees.
type queryRecorder struct {
	mu  sync.Mutex
	sql []string
}

func (r *queryRecorder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.mu.Lock()
	r.sql = append(r.sql, d.SQL)
	r.mu.Unlock()
	return ctx
}

func (r *queryRecorder) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *queryRecorder) seen(sub string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.sql, func(s string) bool { return strings.Contains(s, sub) })
}

// TestServerViewNotTraced: the side connection does not use the pool's
// pgx tracer (nor its other hooks): the application's traces never show
// pgxleak's own pg_stat_activity and pg_terminate_backend queries.
func TestServerViewNotTraced(t *testing.T) {
	cfg, err := pgx.ParseConfig(pgtest.NewDatabase(t))
	require.NoError(t, err)
	rec := &queryRecorder{}
	cfg.Tracer = rec
	db, err := pgxleak.OpenDB(stdlib.GetConnector(*cfg), pgxleak.WithLogger(quiet))
	require.NoError(t, err)
	defer db.Close()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, "SELECT 1")
	require.NoError(t, err)
	in, err := pgxleak.Inspect(ctx, db)
	require.NoError(t, err)
	if len(in.Checkouts) != 1 || in.Checkouts[0].Server == nil {
		t.Fatalf("checkouts %+v, notes %q: want one with the server's view", in.Checkouts, in.Notes)
	}
	require.NoError(t, pgxleak.Terminate(ctx, db, in.Checkouts[0].BackendPID))
	if !rec.seen("SELECT 1") {
		t.Fatal("the tracer did not see the pool's own query")
	}
	for _, q := range []string{"pg_stat_activity", "pg_terminate_backend"} {
		if rec.seen(q) {
			t.Errorf("the pool's tracer saw pgxleak's %s query", q)
		}
	}
}

// TestServerViewNeverHoldsReports: when the server does not answer the
// side connection, a leak report still comes at once, without the server's
// view or a note about it (it is read in the background for the next
// one), instead of waiting out the side connection's timeout on the
// monitor ("server view unavailable: no answer within 1s").
func TestServerViewNeverHoldsReports(t *testing.T) {
	cfg, err := pgx.ParseConfig(pgtest.NewDatabase(t))
	require.NoError(t, err)
	proxy, err := faultproxy.New(fmt.Sprintf("%s:%d", cfg.Host, cfg.Port))
	require.NoError(t, err)
	defer proxy.Close()
	cfg.Host, cfg.Port = "127.0.0.1", uint16(proxy.Port())
	rec := &leaktest.Recorder{}
	db, err := pgxleak.OpenDB(stdlib.GetConnector(*cfg), rec.Option(), pgxleak.WithLogger(quiet), pgxleak.WithLeakThreshold(50*time.Millisecond))
	require.NoError(t, err)
	defer db.Close()
	tx, err := db.Begin()
	require.NoError(t, err)
	_, err = tx.Exec("SELECT 1")
	require.NoError(t, err)
	proxy.Set(faultproxy.Toxics{Timeout: true}) // a black hole: the side connection's connect hangs
	r := rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakSuspected })
	notes := strings.Join(r.Notes, "; ")
	if r.Server != nil || strings.Contains(notes, "server view") {
		t.Errorf("report notes %q, server %+v: want the report without waiting for the server", notes, r.Server)
	}
	proxy.Clear()
	require.NoError(t, tx.Rollback())
	require.NoError(t, db.Close())
}
