package pgxleak

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// openOne opens a pool of one connection on a fresh database and returns
// it with the connection's state, once it has been checked out and
// returned once.
func openOne(t *testing.T) (*sql.DB, *connState) {
	t.Helper()
	db, err := Open("pgx", pgtest.NewDatabase(t), WithMaxOpenConns(1), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	require.NoError(t, db.PingContext(context.Background()))
	var c *connState
	poolOf(db).tracker.each(func(s *connState) { c = s })
	require.NotNil(t, c, "no connection tracked")
	return db, c
}

// backendPID returns the backend PID of the next checkout of db.
func backendPID(t *testing.T, db *sql.DB) uint32 {
	t.Helper()
	var pid uint32
	require.NoError(t, db.QueryRowContext(context.Background(), "SELECT pg_backend_pid()").Scan(&pid))
	return pid
}

// TestTerminateRechecksCheckout: a connection chosen for termination that
// was given back and checked out again by another caller (same backend)
// is not marked: the innocent session is not ended. Terminate chooses
// under the pool's lock and marks later; this is the step after.
func TestTerminateRechecksCheckout(t *testing.T) {
	db, c := openOne(t)
	ctx := context.Background()
	leaker, err := db.Conn(ctx)
	require.NoError(t, err)
	require.NoError(t, leaker.PingContext(ctx))
	c.mu.Lock()
	chosen := c.checkouts // what terminate remembers when it chooses
	c.mu.Unlock()
	_ = leaker.Close()            // the leaker gives it back...
	innocent, err := db.Conn(ctx) // ...and another caller takes it
	require.NoError(t, err)
	defer innocent.Close()
	require.NoError(t, innocent.PingContext(ctx))
	require.False(t, c.markTerminated(chosen), "marked a connection checked out again since it was chosen")
	require.False(t, c.isTerminated(), "the innocent checkout's connection is marked terminated")
	c.mu.Lock()
	now := c.checkouts
	c.mu.Unlock()
	require.True(t, c.markTerminated(now), "did not mark the connection on the checkout chosen")
}

// TestTerminateRefusesIdle: Terminate of a connection given back before it
// was marked says so, and leaves it usable.
func TestTerminateRefusesIdle(t *testing.T) {
	db, _ := openOne(t)
	pid := backendPID(t, db)
	err := Terminate(context.Background(), db, pid)
	require.Error(t, err, "Terminate of an idle connection")
	require.True(t, strings.HasPrefix(err.Error(), "pgxleak: "), "Terminate of an idle connection: %v, want a pgxleak error", err)
	assert.Equal(t, pid, backendPID(t, db), "the next checkout is on the idle backend, untouched")
}

// TestTerminatedIdleNotHandedOut: an idle connection marked terminated is
// discarded at its next checkout rather than handed out to fail.
func TestTerminatedIdleNotHandedOut(t *testing.T) {
	db, c := openOne(t)
	pid := backendPID(t, db)
	c.mu.Lock()
	c.terminated = true
	c.mu.Unlock()
	assert.NotEqual(t, pid, backendPID(t, db), "the terminated idle connection was handed out")
}

// TestSideConnIdlesOut: the side connection of a pool without a *sql.DB
// (sql.Open("pgxleak", ...): no wait sampler) is closed once unused for
// the idle time.
func TestSideConnIdlesOut(t *testing.T) {
	cfg, err := newConfig(nil)
	require.NoError(t, err)
	cfg.sideIdle = 10 * time.Millisecond
	pc, err := pgx.ParseConfig(pgtest.NewDatabase(t))
	require.NoError(t, err)
	p := newPool(cfg, "")
	p.diagnosis.side.cfg = pc // as from the pool's first pgx connection
	p.start()
	defer p.close()
	require.NoError(t, p.diagnosis.side.do(context.Background(), func(ctx context.Context, c *pgx.Conn) error { return c.Ping(ctx) }))
	pgtest.WaitFor(t, 5*time.Second, "the idle side connection closed", func() bool {
		s := &p.diagnosis.side
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.conn == nil
	})
}
