package pgxleak

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The server's side. For pgx pools, the held connections' backends are
// looked up in pg_stat_activity over a side connection: never one of the
// pool's, which may be exhausted. It is made with the pool's own pgx
// configuration, only off the hot path, with a short timeout, and closed
// after sideIdle without use. A refused connection (max_connections,
// permissions) is not retried for serverRetry, and the reason is given
// instead of the view.

// sideConn is a tracker's side connection and its cached view.
type sideConn struct {
	mu       sync.Mutex      // the connection: one user at a time
	cfg      *pgx.ConnConfig // the pool's, from its first pgx connection; nil for another driver
	conn     *pgx.Conn
	lastUsed time.Time
	closed   bool

	// cacheMu guards what the monitor reads without waiting for the
	// server: it is never held across a connect or a query.
	cacheMu sync.Mutex
	failed  time.Time                 // when the last connect or query failed
	failure string                    // why, without credentials
	view    map[uint32]ServerActivity // the last view, by PID
	asked   []uint32                  // the PIDs it was read for
	viewAt  time.Time
}

// setConfig records the pool's pgx configuration from one of its
// connections, once.
func (s *sideConn) setConfig(c *pgx.Conn) {
	s.mu.Lock()
	if s.cfg == nil {
		s.cfg = c.Config()
	}
	s.mu.Unlock()
}

// configured reports whether the pool's pgx configuration is known.
func (s *sideConn) configured() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg != nil
}

// applicationName is the pool's sessions' application_name, "" before
// its first pgx connection.
func (s *sideConn) applicationName() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg == nil {
		return ""
	}
	return s.cfg.RuntimeParams["application_name"]
}

// do runs f on the side connection, connecting first if needed, within
// serverTimeout. It returns the reason the server could not be asked, or
// f's error.
func (s *sideConn) do(ctx context.Context, f func(ctx context.Context, c *pgx.Conn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.doLocked(ctx, f)
}

func (s *sideConn) doLocked(ctx context.Context, f func(ctx context.Context, c *pgx.Conn) error) error {
	switch {
	case s.closed:
		return errors.New("the pool is closed")
	case s.cfg == nil:
		return errors.New("no pgx connection configuration (the pool's driver is not pgx, or it has not connected yet)")
	}
	if failure := s.refused(); failure != "" {
		return errors.New(failure)
	}
	caller := ctx
	ctx, cancel := context.WithTimeout(ctx, serverTimeout)
	defer cancel()
	if s.conn == nil || s.conn.IsClosed() {
		c, err := pgx.ConnectConfig(ctx, sideConfig(s.cfg))
		if err != nil {
			return s.fail(caller, err)
		}
		s.conn = c
	}
	s.lastUsed = time.Now()
	if err := f(ctx, s.conn); err != nil {
		if s.conn.IsClosed() || ctx.Err() != nil {
			s.closeConnLocked()
		}
		return s.fail(caller, err)
	}
	s.cacheMu.Lock()
	s.failed, s.failure = time.Time{}, ""
	s.cacheMu.Unlock()
	return nil
}

// refused returns why the server could not be asked, if that was less
// than serverRetry ago.
func (s *sideConn) refused() string {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if !s.failed.IsZero() && time.Since(s.failed) < serverRetry {
		return s.failure
	}
	return ""
}

// sideConfig is the pool's pgx configuration for the side connection: the
// same servers, credentials and transport, without the application's
// tracer, notice, notification and error handlers and session setup, so
// that pgxleak's own queries never reach them.
func sideConfig(poolCfg *pgx.ConnConfig) *pgx.ConnConfig {
	cfg := poolCfg.Copy()
	cfg.Tracer = nil
	cfg.AfterConnect = nil
	cfg.OnNotice = nil
	cfg.OnNotification = nil
	cfg.OnPgError = closeOnFatal
	cfg.ConnectTimeout = serverTimeout
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = make(map[string]string)
	}
	cfg.RuntimeParams["application_name"] = sideApplicationName
	delete(cfg.RuntimeParams, "idle_in_transaction_session_timeout")
	return cfg
}

// closeOnFatal is pgconn's default error handler: a FATAL error closes the
// connection.
func closeOnFatal(_ *pgconn.PgConn, err *pgconn.PgError) bool {
	return !strings.EqualFold(err.Severity, "FATAL")
}

// fail records why the server could not be asked: the server's message and
// SQLSTATE when it sent one (never the connect string), else the error with
// the DSN's passwords masked. When the caller's context ended, the caller
// gave up, not the server: that is not recorded.
func (s *sideConn) fail(caller context.Context, err error) error {
	if caller.Err() != nil || errors.Is(err, context.Canceled) {
		return errors.New("cancelled")
	}
	var pe *pgconn.PgError
	msg := ""
	switch {
	case errors.As(err, &pe):
		msg = fmt.Sprintf("%s: %s (SQLSTATE %s)", pe.Severity, pe.Message, pe.Code)
	case errors.Is(err, context.DeadlineExceeded):
		msg = "no answer within " + serverTimeout.String()
	default:
		msg = redactError(err, dsnSecrets(s.cfg.ConnString(), s.cfg)).Error()
	}
	s.cacheMu.Lock()
	s.failed, s.failure = time.Now(), msg
	s.cacheMu.Unlock()
	return errors.New(msg)
}

func (s *sideConn) closeConnLocked() {
	if s.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), serverTimeout)
	_ = s.conn.Close(ctx)
	cancel()
	s.conn = nil
}

// closeIfIdle closes the side connection once it has not been used for
// idle; the monitor calls it every idle/4, for every pool.
func (s *sideConn) closeIfIdle(idle time.Duration) {
	if !s.mu.TryLock() { // in use: not idle
		return
	}
	if s.conn != nil && time.Since(s.lastUsed) >= idle {
		s.closeConnLocked()
	}
	s.mu.Unlock()
}

// close closes the side connection for good, with the pool.
func (s *sideConn) close() {
	s.mu.Lock()
	s.closed = true
	s.closeConnLocked()
	s.mu.Unlock()
}

// activityQuery reads the backends of $1 and every backend waiting on a
// lock, to find both what blocks ours and whom ours block.
const activityQuery = `SELECT pid, coalesce(state, ''), coalesce(wait_event_type, ''), coalesce(wait_event, ''),
	xact_start, query_start, state_change, pg_blocking_pids(pid)
FROM pg_stat_activity
WHERE pid = ANY($1) OR wait_event_type = 'Lock'`

// serverView fills the Server of each checkout with a backend PID, and
// joins blockers to this pool's checkouts. It returns a note when the
// view is unavailable, and why. With ask, it asks the server when its
// cached view is stale (Inspect); without, it never waits for the server
// (the monitor's reports): it uses the cached view, and has a fresh one
// read in the background for the next report.
func (p *pool) serverView(ctx context.Context, cs []Checkout, ask bool) string {
	if !p.cfg.serverView {
		return ""
	}
	if p.cfg.pgBouncer {
		return "server view unavailable behind PgBouncer: the backend PIDs are PgBouncer's, not the server's"
	}
	var pids []uint32
	for _, c := range cs {
		if c.BackendPID != 0 {
			pids = append(pids, c.BackendPID)
		}
	}
	if len(pids) == 0 {
		return ""
	}
	var view map[uint32]ServerActivity
	if ask {
		var err error
		if view, err = p.diagnosis.side.activity(ctx, pids); err != nil {
			return "server view unavailable: " + err.Error()
		}
	} else {
		v, fresh, failure := p.diagnosis.side.cached(pids)
		if !fresh {
			p.refreshServerView(pids)
		}
		switch {
		case v == nil && failure != "":
			return "server view unavailable: " + failure
		case v == nil: // not read yet: the next report has it; no note, it is not a fault
			return ""
		}
		view = v
	}
	culprits := make(map[uint32]Frame, len(cs))
	for _, c := range cs {
		if c.BackendPID != 0 {
			culprits[c.BackendPID] = c.Culprit
		}
	}
	missing := 0
	for i := range cs {
		a, ok := view[cs[i].BackendPID]
		if !ok {
			if cs[i].BackendPID != 0 {
				missing++
			}
			continue
		}
		a.Culprits = nil
		for _, pid := range slices.Concat(a.BlockedBy, a.Blocking) {
			if f, ok := culprits[pid]; ok {
				if a.Culprits == nil {
					a.Culprits = make(map[uint32]Frame)
				}
				a.Culprits[pid] = f
			}
		}
		cs[i].Server = &a
	}
	if missing > 0 {
		return "the server has no pg_stat_activity row for " + numbered(missing, "backend: it has exited, or is", "backends: they have exited, or are") + " not visible to this role"
	}
	return ""
}

// refreshServerView reads the server's view of pids in the background,
// one read at a time, never once the pool is closing (Close waits for it).
func (p *pool) refreshServerView(pids []uint32) {
	st := &p.diagnosis
	if p.internalCtx.Err() != nil || !st.refreshing.CompareAndSwap(false, true) {
		return
	}
	pids = slices.Clone(pids)
	if !p.goBackground(func() {
		defer st.refreshing.Store(false)
		if _, err := st.side.activity(p.internalCtx, pids); err == nil {
			st.diagMu.Lock()
			st.last = nil // the next diagnosis carries the new view
			st.diagMu.Unlock()
		}
	}) {
		st.refreshing.Store(false)
	}
}

// cached returns the last view if it covers pids and is younger than
// serverViewStale, whether it is fresh (younger than dumpInterval), and
// why the server refused, if it did within serverRetry.
func (s *sideConn) cached(pids []uint32) (view map[uint32]ServerActivity, fresh bool, failure string) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if !s.failed.IsZero() && time.Since(s.failed) < serverRetry {
		failure = s.failure
	}
	age := time.Since(s.viewAt)
	if s.view == nil || age >= serverViewStale || !subset(pids, s.asked) {
		return nil, false, failure
	}
	return s.view, age < dumpInterval, failure
}

// viewOf returns the last view if it covers pids, with when it was read,
// and why the server refused, if it did within serverRetry.
func (s *sideConn) viewOf(pids []uint32) (view map[uint32]ServerActivity, at time.Time, failure string) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if !s.failed.IsZero() && time.Since(s.failed) < serverRetry {
		failure = s.failure
	}
	if s.view == nil || !subset(pids, s.asked) {
		return nil, time.Time{}, failure
	}
	return s.view, s.viewAt, failure
}

// activity returns pg_stat_activity for pids, from the cache when it is
// younger than dumpInterval and covers them.
func (s *sideConn) activity(ctx context.Context, pids []uint32) (map[uint32]ServerActivity, error) {
	if v, fresh, _ := s.cached(pids); fresh {
		return v, nil
	}
	return s.read(ctx, pids)
}

// read reads pg_stat_activity for pids now, and caches it.
func (s *sideConn) read(ctx context.Context, pids []uint32) (map[uint32]ServerActivity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	view := make(map[uint32]ServerActivity, len(pids))
	err := s.doLocked(ctx, func(ctx context.Context, c *pgx.Conn) error {
		arg := make([]int32, len(pids))
		for i, pid := range pids {
			arg[i] = int32(pid)
		}
		rows, err := c.Query(ctx, activityQuery, arg)
		if err != nil {
			return err
		}
		blocks := map[uint32][]uint32{} // blocker → blocked
		for rows.Next() {
			var (
				pid                int32
				a                  ServerActivity
				xact, query, state *time.Time
				blockedBy          []int32
			)
			if err := rows.Scan(&pid, &a.State, &a.WaitEventType, &a.WaitEvent, &xact, &query, &state, &blockedBy); err != nil {
				rows.Close()
				return err
			}
			for _, b := range blockedBy {
				blocks[uint32(b)] = append(blocks[uint32(b)], uint32(pid))
				a.BlockedBy = append(a.BlockedBy, uint32(b))
			}
			if !slices.Contains(pids, uint32(pid)) {
				continue
			}
			a.XactStart, a.QueryStart, a.StateChange = deref(xact), deref(query), deref(state)
			view[uint32(pid)] = a
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for pid, a := range view {
			a.Blocking = blocks[pid]
			view[pid] = a
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.cacheMu.Lock()
	s.view, s.asked, s.viewAt = view, slices.Clone(pids), time.Now()
	s.cacheMu.Unlock()
	return view, nil
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

func subset(a, b []uint32) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// terminate asks the server to end backend pid. database/sql's slot stays
// taken until the holder gives the connection back; the server rolls the
// transaction back and releases its locks now.
func (s *sideConn) terminate(ctx context.Context, pid uint32) error {
	var ok bool
	err := s.do(ctx, func(ctx context.Context, c *pgx.Conn) error {
		return c.QueryRow(ctx, "SELECT pg_terminate_backend($1)", int32(pid)).Scan(&ok)
	})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("the server has no backend with PID %d (it has exited)", pid)
	}
	s.cacheMu.Lock()
	s.view = nil // it changed
	s.cacheMu.Unlock()
	return nil
}
