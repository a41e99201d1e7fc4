// Package pgtest gives pgxleak's tests a real PostgreSQL server, and
// pgbouncer in front of it.
//
// The server is, in order of preference: DATABASE_URL; the local server at
// 127.0.0.1:5432 (or PGXLEAK_LOCAL_ADDR; user postgres, database test); a
// private throwaway cluster started from the local PostgreSQL binaries
// (package cluster: initdb + pg_ctl in a temporary directory, on a free
// port, as an unprivileged user when running as root). A DATABASE_URL that
// is set but does not answer is always a failure.
//
// A test whose dependency is missing (the server, pgbouncer, Chromium)
// fails the run, once per dependency, with one line saying how to get it,
// unless PGXLEAK_SKIP names the dependency (PGXLEAK_SKIP=pgbouncer,chromium):
// go test prints a passing package's skips only with -v, so a skip by
// default would print "ok" for a suite that tested nothing. See Missing.
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
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgxleak/pgxleak/internal/pgtest/cluster"
)

// hideLocalEnv makes pgtest behave as on a machine without PostgreSQL and
// pgbouncer (nothing on the local address, no binaries in
// /usr/lib/postgresql, /usr/sbin or /usr/local), for the tests of that
// behaviour; hiding them from PATH is up to the caller.
const hideLocalEnv = cluster.HideLocalEnv

// LocalDSN is the local server the machines run.
const LocalDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// LocalAddrEnv names the environment variable that moves the local server
// from 127.0.0.1:5432 to another host:port (user postgres, database test
// still). Pointing it at a closed port makes the tests (and leakdemo) start
// their own cluster, as on a machine where PostgreSQL is stopped.
const LocalAddrEnv = "PGXLEAK_LOCAL_ADDR"

// localAddr returns the local server's address: LocalAddrEnv, or
// 127.0.0.1:5432.
func localAddr() string {
	if addr := os.Getenv(LocalAddrEnv); addr != "" {
		return addr
	}
	return "127.0.0.1:5432"
}

var shared struct {
	once    sync.Once
	dsn     string
	source  string
	cluster *Cluster
	err     error
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
		shared.cluster.Close()
		shared.cluster = nil
	}
	cluster.RemoveTemplate()
}

// AdminDSN returns a DSN for the shared test server with rights to create
// databases, starting a private cluster if it must. Without a server it
// ends t as Missing says (a DATABASE_URL that does not answer always fails).
func AdminDSN(t testing.TB) string {
	t.Helper()
	shared.once.Do(func() {
		shared.dsn, shared.source, shared.err = findServer()
	})
	if shared.err != nil {
		if errors.Is(shared.err, errURLDown) {
			failOnce(t, "DATABASE_URL", fmt.Sprintf("pgtest: %v", shared.err))
		}
		Missing(t, DepPostgres, shared.err)
	}
	return shared.dsn
}

// Source says where the shared server came from: "DATABASE_URL",
// "local" or "private cluster".
func Source(t testing.TB) string {
	AdminDSN(t)
	return shared.source
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
	local := strings.Replace(LocalDSN, "127.0.0.1:5432", localAddr(), 1)
	if os.Getenv(hideLocalEnv) != "1" && ping(local) == nil {
		return local, "local", nil
	}
	c, cerr := cluster.New()
	if cerr != nil {
		return "", "", fmt.Errorf("no DATABASE_URL, no server at %s, and no private cluster: %w", localAddr(), cerr)
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
