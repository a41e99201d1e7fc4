// Package pgtest gives pgxleak's tests a real PostgreSQL server.
//
// The server is, in order of preference: DATABASE_URL; the local server at
// 127.0.0.1:5432 (user postgres, database test); a private throwaway cluster
// started from the local PostgreSQL binaries (initdb + pg_ctl in a temporary
// directory, on a free port, as an unprivileged user when running as root).
// With none of these, the run fails, once, with one line saying how to get
// PostgreSQL, unless PGXLEAK_SKIP_DB=1 asks to skip the integration tests
// on purpose: go test prints a passing package's skips only with -v, so a
// skip by default would print "ok" for a suite that tested nothing. A
// DATABASE_URL that is set but does not answer is always a failure.
//
// Every test gets its own database (NewDatabase), so tests can run in
// parallel. Tests that kill or restart a server ask for a private cluster
// of their own (NewCluster), which is cheap: initdb runs once per process
// and each cluster starts from a copy.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// RequireEnv is the environment variable that turns a missing pgbouncer
// from a skip into a failure. CI sets it to 1. (A missing PostgreSQL is a
// failure anyway: see SkipEnv.)
const RequireEnv = "PGXLEAK_REQUIRE_DB"

// SkipEnv is the environment variable that skips the tests needing a
// server, on purpose, when there is none: PGXLEAK_SKIP_DB=1.
const SkipEnv = "PGXLEAK_SKIP_DB"

// hideLocalEnv makes pgtest behave as on a machine without PostgreSQL
// (nothing on 127.0.0.1:5432, no binaries in /usr/lib/postgresql), for
// the test of that behaviour; hiding initdb from PATH is up to the caller.
const hideLocalEnv = "PGXLEAK_PGTEST_HIDE_LOCAL"

// LocalDSN is the local server the machines run.
const LocalDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

var shared struct {
	once    sync.Once
	dsn     string
	source  string
	cluster *Cluster
	err     error
	failed  atomic.Bool // a test already failed for the missing server
}

// M wraps a *testing.M so that a shared private cluster, if one was
// started, is stopped after the tests:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.M(m).Run()) }
func M(m *testing.M) interface{ Run() int } { return mainRunner{m} }

type mainRunner struct{ m *testing.M }

func (r mainRunner) Run() int {
	code := r.m.Run()
	Shutdown()
	return code
}

// Shutdown stops the shared private cluster, if one was started.
func Shutdown() {
	if shared.cluster != nil {
		shared.cluster.stop()
		shared.cluster = nil
	}
	removeTemplate()
}

// AdminDSN returns a DSN for the shared test server with rights to create
// databases, starting a private cluster if it must. Without a server it
// skips t, or fails it when PGXLEAK_REQUIRE_DB=1.
func AdminDSN(t testing.TB) string {
	t.Helper()
	shared.once.Do(func() {
		shared.dsn, shared.source, shared.err = findServer()
	})
	if shared.err != nil {
		noServer(t, shared.err)
	}
	return shared.dsn
}

// Source says where the shared server came from: "DATABASE_URL",
// "local" or "private cluster".
func Source(t testing.TB) string {
	AdminDSN(t)
	return shared.source
}

// noServer fails the run for a missing server: the first test that needs
// one fails with one line that says what to do, and the others skip (the
// run has failed already). With PGXLEAK_SKIP_DB=1 they all skip, unless
// DATABASE_URL is set and does not answer.
func noServer(t testing.TB, err error) {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" && !errors.Is(err, errURLDown) {
		t.Skipf("pgtest: no PostgreSQL (%v); skipped on purpose, %s=1", err, SkipEnv)
	}
	if !shared.failed.CompareAndSwap(false, true) {
		t.Skip("pgtest: no PostgreSQL; the run has failed for it already")
	}
	t.Fatalf("pgtest: no PostgreSQL for the integration tests: %v. Install it (apt-get install postgresql) or set DATABASE_URL; or set %s=1 to skip them on purpose", err, SkipEnv)
}

// errURLDown marks a DATABASE_URL that is set but does not answer.
var errURLDown = errors.New("DATABASE_URL is set but does not answer")

func findServer() (dsn, source string, err error) {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		if err := ping(u); err != nil {
			return "", "", fmt.Errorf("%w: %w", errURLDown, err)
		}
		return u, "DATABASE_URL", nil
	}
	if os.Getenv(hideLocalEnv) != "1" && ping(LocalDSN) == nil {
		return LocalDSN, "local", nil
	}
	c, cerr := startCluster(nil)
	if cerr != nil {
		return "", "", fmt.Errorf("no DATABASE_URL, nothing on 127.0.0.1:5432, and no private cluster: %w", cerr)
	}
	shared.cluster = c
	return c.DSN(), "private cluster", nil
}

func ping(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	return c.Ping(ctx)
}

// NewDatabase creates an empty database on the shared server for t alone,
// drops it when t ends, and returns its DSN. The DSN's application_name is
// the database's name, so pg_stat_activity can count the test's own
// connections.
func NewDatabase(t testing.TB) string {
	t.Helper()
	admin := AdminDSN(t)
	name := "pgxleak_" + randomSuffix()
	execSQL(t, admin, "CREATE DATABASE "+name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("pgtest: dropping %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: dropping %s: %v", name, err)
		}
	})
	return WithParams(admin, map[string]string{"dbname": name, "application_name": name})
}

// Exec runs sql on dsn with a fresh connection, failing t on error.
func Exec(t testing.TB, dsn, sql string) { t.Helper(); execSQL(t, dsn, sql) }

func execSQL(t testing.TB, dsn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("pgtest: connecting: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: %s: %v", sql, err)
	}
}

// CountConnections returns how many backends are connected with the given
// application_name, as pg_stat_activity sees them.
func CountConnections(t testing.TB, dsn, applicationName string) int {
	t.Helper()
	return countBackends(t, dsn, "application_name = $1", applicationName)
}

// countBackends counts the pg_stat_activity rows matching where (with $1
// bound to arg), from a connection of its own that where must not match.
func countBackends(t testing.TB, dsn, where string, arg any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, WithParams(dsn, map[string]string{"application_name": "pgtest_observer"}))
	if err != nil {
		t.Fatalf("pgtest: connecting: %v", err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE "+where, arg).Scan(&n); err != nil {
		t.Fatalf("pgtest: counting backends: %v", err)
	}
	return n
}

// WithParams returns dsn with the given connection parameters set
// ("dbname" is the database), for both URL and key=value DSNs.
func WithParams(dsn string, params map[string]string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err == nil {
			q := u.Query()
			for k, v := range params {
				if k == "dbname" {
					u.Path = "/" + v
					continue
				}
				q.Set(k, v)
			}
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	var b strings.Builder
	b.WriteString(dsn)
	for k, v := range params {
		fmt.Fprintf(&b, " %s='%s'", k, strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v))
	}
	return b.String()
}

// ApplicationName returns the application_name set in dsn, or "".
func ApplicationName(dsn string) string {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return ""
	}
	return cfg.RuntimeParams["application_name"]
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// WaitFor polls cond every few milliseconds until it is true or the
// deadline passes, then fails t with msg.
func WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
