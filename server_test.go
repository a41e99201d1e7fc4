package pgxleak_test

import (
	"context"
	"database/sql"
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
	return leakTx(t, db, "SELECT id FROM t WHERE id = 1 FOR UPDATE")
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
		if !assert.NoError(t, err) {
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
	if assert.NotNil(t, first.Server, "the leak's server view") {
		assert.Equal(t, "idle in transaction", first.Server.State, "the leak's server view")
		assert.Contains(t, first.Server.Blocking, second.BackendPID, "the leak's server view: blocking the second checkout")
	}
	s := second.Server
	require.NotNil(t, s, "the blocked checkout's server view")
	assert.Contains(t, s.BlockedBy, first.BackendPID, "the blocked checkout's server view: blocked by the leak")
	assert.Equal(t, leakAt.Line, s.Culprits[first.BackendPID].Line, "the blocked checkout's server view: the blocker's culprit")
	assert.Contains(t, second.String(), "server: active, waiting on a lock (transactionid) held by PID "+strconv.Itoa(int(first.BackendPID))+" (checked out at "+leakAt.Short()+")")
	assert.Contains(t, first.String(), "server: idle in transaction, holding locks that block PID "+strconv.Itoa(int(second.BackendPID))+" (checked out at "+at.Short()+")")
	cancel()
	<-done
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
	assert.LessOrEqual(t, time.Since(start), 3*time.Second, "Inspect with the server refusing must stay bounded")
	want := "server view unavailable: FATAL: sorry, too many clients already (SQLSTATE 53300)"
	assert.Contains(t, in.Notes, want)
	if assert.Len(t, in.Checkouts, 2) {
		assert.Nil(t, in.Checkouts[0].Server, "no server view")
		assert.NotNil(t, in.Checkouts[0].Holder, "the holder is found without the server")
	}
	require.NoError(t, db.Close())
	r := rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakStillOut })
	assert.Contains(t, r.Notes, want, "the report's notes")
	assert.NotContains(t, strings.Join(r.Notes, " "), "postgres@", "the report's notes carry credentials")
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
	require.Len(t, in.Checkouts, 1, "notes %q", in.Notes)
	require.NotNil(t, in.Checkouts[0].Server, "the server's view; notes %q", in.Notes)
	require.NoError(t, pgxleak.Terminate(ctx, db, in.Checkouts[0].BackendPID))
	require.True(t, rec.seen("SELECT 1"), "the tracer did not see the pool's own query")
	for _, q := range []string{"pg_stat_activity", "pg_terminate_backend"} {
		assert.False(t, rec.seen(q), "the pool's tracer saw pgxleak's %s query", q)
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
	assert.Nil(t, r.Server, "the report does not wait for the server")
	assert.NotContains(t, notes, "server view", "the report does not wait for the server")
	proxy.Clear()
	require.NoError(t, tx.Rollback())
	require.NoError(t, db.Close())
}
