package pgxleak_test

// Secrets tests (issue 7, RELIABILITY.md): every signal pgxleak emits
// (errors, log lines at DEBUG, leak reports, spans, metrics, Checkouts,
// LeakError) is captured and searched for the password of a role that must
// authenticate with scram-sha-256, for the DSN, and for bound arguments.

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestSecretsNeverEmitted runs a pool authenticated with scram-sha-256
// through every kind of signal: warm-up, capacity check, queries with
// bound arguments, a suspected leak and its resolution, Rows dropped
// unclosed, connection waits, a failing keep-idle task, Drain with
// connections still out; and errors from wrong passwords, unreachable
// hosts, malformed DSNs and a missing database. No signal may contain the
// password (in any spelling, or its random core), the DSN, or a bound
// argument. It is not parallel because it also captures slog.Default.
func TestSecretsNeverEmitted(t *testing.T) {
	cl, pw, core := relScramCluster(t)
	port := cl.Port()
	arg := "card-" + relRandHex(8) // a bound argument that must never be reported
	sig := newRelSignals(t)
	prev := slog.Default()
	slog.SetDefault(sig.logger())
	t.Cleanup(func() { slog.SetDefault(prev) })

	dsns := map[string]string{
		"url": relAppURL(port, pw, "appdb", "sslmode=disable"),
		"kv":  relAppKV(port, pw, "appdb"),
	}
	for form, dsn := range dsns {
		t.Run(form, func(t *testing.T) {
			opts := append(sig.options(),
				pgxleak.WithMaxOpenConns(3), pgxleak.WithMinIdleConns(1), pgxleak.WithCapacityCheck(1000),
				pgxleak.WithLeakThreshold(100*time.Millisecond), pgxleak.WithReportInterval(0),
				pgxleak.WithSlowWaitThreshold(time.Millisecond), pgxleak.WithWaitSampleInterval(20*time.Millisecond),
				pgxleak.ConnMaxIdleTimeForTest(100*time.Millisecond))
			db, err := pgxleak.Open("pgx", dsn, opts...)
			require.NoError(t, err, "Open")
			defer db.Close()
			relExercise(t, sig, db, arg)

			// A connection held to the end, for Drain below.
			ctx := t.Context()
			held, err := db.Conn(ctx)
			require.NoError(t, err)
			defer held.Close()
			heldPID, err := relBackendPID(ctx, held)
			require.NoError(t, err)
			_, err = held.ExecContext(ctx, "SELECT $1::text", arg)
			require.NoError(t, err)

			// The keep-idle task fails once the role may no longer log in,
			// and logs the server's error.
			admin := relAdmin(t, cl)
			_, err = admin.Exec(ctx, "ALTER ROLE app NOLOGIN")
			require.NoError(t, err)
			defer func() { _, _ = admin.Exec(context.Background(), "ALTER ROLE app LOGIN") }()
			_, err = admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app' AND pid <> $1", heldPID)
			require.NoError(t, err)
			pgtest.WaitFor(t, 20*time.Second, "the keep-idle task to log its failure", func() bool {
				return strings.Contains(sig.logs.String(), "is not permitted to log in")
			})
			_, err = admin.Exec(ctx, "ALTER ROLE app LOGIN")
			require.NoError(t, err)

			// Drain with connections still out: the one whose Rows were
			// dropped, and the one held on purpose.
			dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			err = pgxleak.Drain(dctx, db)
			var le *pgxleak.LeakError
			require.ErrorAs(t, err, &le, "Drain")
			require.GreaterOrEqual(t, len(le.Checkouts), 2, "Drain lists the dropped Rows' and the held connection")
			sig.addErr(err)
		})
	}

	// Errors, from every way of opening a pool.
	closed := relClosedPort(t)
	wrong := "Wr0ng:" + relRandHex(8) + "/@x"
	errCases := []struct {
		name, dsn, want string
	}{
		{"wrong password", relAppURL(port, wrong, "appdb", "sslmode=disable"), "28P01"},
		{"wrong password kv", relAppKV(port, wrong, "appdb"), "28P01"},
		{"unreachable host", relAppURL(closed, pw, "appdb", "sslmode=disable&connect_timeout=5"), "refused"},
		{"unreachable host kv", relAppKV(closed, pw, "appdb"), "refused"},
		{"wrong database", relAppURL(port, pw, "nosuchdb", "sslmode=disable"), "3D000"},
		{"bad sslmode", relAppURL(port, pw, "appdb", "sslmode=bogus"), "sslmode is invalid"},
		{"bad port", "postgres://app:" + pw + "@127.0.0.1:notaport/appdb", "invalid port"},
		{"bad url", "postgres://app:" + pw + "@[::1/appdb", "cannot parse"},
		{"unencoded password", "postgres://app:" + pw + "@127.0.0.1:" + fmt.Sprint(port) + "/appdb?sslmode=disable", ""},
		{"kv password with spaces", fmt.Sprintf("host=127.0.0.1 port=%d user=app password = '%s' sslmode=bogus", port, pw), "sslmode is invalid"},
		{"kv unterminated quote", fmt.Sprintf("host=127.0.0.1 port=%d user=app password='%s sslmode=disable", port, pw), "unterminated"},
		// An upper-case scheme is not a URL to pgx: the whole DSN becomes one
		// startup parameter, which the server quotes back.
		{"dsn echoed by the server", fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable POSTGRES://app:%s@h/appdb?x=y", port, pw), "42704"},
	}
	for _, tc := range errCases {
		t.Run("error/"+tc.name, func(t *testing.T) {
			var errs []error
			db, err := pgxleak.Open("pgx", tc.dsn, append(sig.options(), pgxleak.WithMinIdleConns(1))...)
			if err == nil {
				_ = db.Close()
			}
			errs = append(errs, err)
			if db, err := pgxleak.Open("pgx", tc.dsn, sig.options()...); err != nil {
				errs = append(errs, err)
			} else {
				errs = append(errs, db.PingContext(t.Context()))
				_ = db.Close()
			}
			if db, err := sql.Open("pgxleak", tc.dsn); err != nil {
				errs = append(errs, err)
			} else {
				errs = append(errs, db.PingContext(t.Context()))
				_ = db.Close()
			}
			if cfg, err := pgx.ParseConfig(tc.dsn); err == nil {
				db, err := pgxleak.OpenDB(stdlib.GetConnector(*cfg), sig.options()...)
				require.NoError(t, err)
				errs = append(errs, db.PingContext(t.Context()))
				_ = db.Close()
			}
			if tc.name == "unencoded password" {
				// pgx may or may not make sense of it; either way it must not
				// be quoted back.
				for _, err := range errs {
					sig.addErr(err)
				}
				return
			}
			for i, err := range errs {
				require.Error(t, err, "way %d of opening succeeded", i)
				assert.ErrorContains(t, err, tc.want, "way %d", i)
				sig.addErr(err)
			}
			if tc.want == "28P01" {
				var pgErr *pgconn.PgError
				if assert.ErrorAs(t, errs[0], &pgErr, "the server's PgError passes through") {
					assert.Equal(t, "28P01", pgErr.Code, "the server's PgError passes through")
				}
			}
			if _, err := pgx.ParseConfig(tc.dsn); err != nil {
				// Both Opens reject a DSN pgx cannot parse, before any warm-up.
				for i, err := range errs[:2] {
					assert.True(t, strings.HasPrefix(err.Error(), "pgxleak: Open: cannot parse"), "way %d: %v, want Open's parse error", i, err)
				}
			} else {
				assert.ErrorContains(t, errs[0], "WithMinIdleConns", "Open's warm-up error names the option")
			}
		})
	}

	out := sig.dump(t)
	// The capture is not vacuous: every kind of signal was emitted.
	for _, want := range []string{
		"kind=suspected", `"kind":"suspected"`, "garbage_collected", "still_out", "returned after",
		"do not fit", "keeping idle connections", "SELECT $1::text",
		"span ", "metric db.client.connection", "db.client.connection.pool.name=127.0.0.1:",
		"password authentication failed", "connection refused", "does not exist", "xxxxx",
	} {
		assert.Contains(t, out, want, "no signal says it: the capture missed something")
	}
	secrets := append(relPasswordForms(pw, core), relPasswordForms(wrong, wrong[6:22])...)
	for _, dsn := range dsns {
		secrets = append(secrets, dsn)
	}
	relAbsent(t, "emitted signals", out, secrets...)
	relAbsent(t, "emitted signals (bound argument)", out, arg)
	if t.Failed() {
		t.Logf("all signals:\n%s", out)
	}
}

// relExercise makes db emit every kind of signal, with arg as a bound
// argument wherever a statement takes one.
func relExercise(t *testing.T, sig *relSignals, db *sql.DB, arg string) {
	t.Helper()
	ctx := t.Context()
	var s string
	require.NoError(t, db.QueryRowContext(ctx, "SELECT $1::text", arg).Scan(&s))
	require.Equal(t, arg, s)
	_, err := db.ExecContext(ctx, "SELECT $1::text", arg)
	require.NoError(t, err)
	stmt, err := db.PrepareContext(ctx, "SELECT $1::text")
	require.NoError(t, err)
	require.NoError(t, stmt.QueryRowContext(ctx, arg).Scan(&s))
	_ = stmt.Close()

	// A suspected leak, then its return.
	c, err := db.Conn(ctx)
	require.NoError(t, err)
	require.NoError(t, c.QueryRowContext(ctx, "SELECT $1::text", arg).Scan(&s))
	sig.leaks.Wait(t, 10*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakSuspected })
	sig.addCheckouts(checkouts(t, db))
	for _, co := range checkouts(t, db) {
		assert.Equal(t, "SELECT $1::text", co.LastStatement, "the statement without its argument")
	}
	// Waiters behind all the pool's connections, held, for wait metrics
	// and spans.
	held := []*sql.Conn{c}
	for len(held) < db.Stats().MaxOpenConnections {
		c2, err := db.Conn(ctx)
		require.NoError(t, err)
		require.NoError(t, c2.PingContext(ctx))
		held = append(held, c2)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			var s string
			assert.NoError(t, db.QueryRowContext(ctx, "SELECT $1::text", arg).Scan(&s))
		})
	}
	pgtest.WaitFor(t, 10*time.Second, "waiters", func() bool { return db.Stats().WaitCount >= 1 })
	time.Sleep(100 * time.Millisecond) // let the waits last several sampling intervals
	for _, c := range held {
		_ = c.Close()
	}
	wg.Wait()
	sig.leaks.Wait(t, 10*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.Resolved })

	// Rows dropped without Close, on a context that is never cancelled.
	leakOnPurpose(func() {
		rows, err := db.QueryContext(context.Background(), "SELECT $1::text", arg)
		require.NoError(t, err)
		_ = rows
	})
	pgtest.WaitFor(t, 20*time.Second, "the dropped Rows to be reported", func() bool {
		runtime.GC()
		for _, l := range sig.leaks.All() {
			if l.Kind == pgxleak.LeakGarbageCollected {
				return true
			}
		}
		return false
	})
	sig.addCheckouts(checkouts(t, db))
}

// relClosedPort returns a TCP port on 127.0.0.1 that nothing listens on.
func relClosedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// TestSecretsWithoutStatements: with WithoutStatements, no statement text
// reaches any signal; without it (the control), the same run reports the
// statement, so the search is not vacuous.
func TestSecretsWithoutStatements(t *testing.T) {
	t.Parallel()
	for _, without := range []bool{true, false} {
		t.Run(fmt.Sprintf("WithoutStatements=%v", without), func(t *testing.T) {
			t.Parallel()
			marker := "stmt_marker_" + relRandHex(6)
			q := "SELECT $1::text AS " + marker
			sig := newRelSignals(t)
			opts := append(sig.options(), pgxleak.WithLeakThreshold(100*time.Millisecond), pgxleak.WithReportInterval(0),
				pgxleak.WithMaxOpenConns(2), pgxleak.WithSlowWaitThreshold(time.Millisecond), pgxleak.WithWaitSampleInterval(20*time.Millisecond))
			if without {
				opts = append(opts, pgxleak.WithoutStatements())
			}
			db, _ := openTest(t, opts...)
			ctx := t.Context()
			c, err := db.Conn(ctx)
			require.NoError(t, err)
			var s string
			require.NoError(t, c.QueryRowContext(ctx, q, "x").Scan(&s))
			sig.leaks.Wait(t, 10*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakSuspected })
			// A waiter behind the two held connections.
			c2, err := db.Conn(ctx)
			require.NoError(t, err)
			_, err = c2.ExecContext(ctx, q, "y")
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() { _, err := db.ExecContext(ctx, q, "z"); done <- err }()
			pgtest.WaitFor(t, 10*time.Second, "a waiter", func() bool { return db.Stats().WaitCount >= 1 })
			time.Sleep(100 * time.Millisecond) // let the wait span several sampling intervals
			sig.addCheckouts(checkouts(t, db))
			_ = c2.Close()
			require.NoError(t, <-done)
			leakOnPurpose(func() {
				rows, err := db.QueryContext(context.Background(), q, "w")
				require.NoError(t, err)
				_ = rows
			})
			pgtest.WaitFor(t, 20*time.Second, "the dropped Rows to be reported", func() bool {
				runtime.GC()
				for _, l := range sig.leaks.All() {
					if l.Kind == pgxleak.LeakGarbageCollected {
						return true
					}
				}
				return false
			})
			dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			err = pgxleak.Drain(dctx, db)
			sig.addErr(err)
			_ = c.Close()
			for _, l := range sig.leaks.All() {
				if without {
					assert.Empty(t, l.LastStatement, "%s report's LastStatement", l.Kind)
				}
			}
			out := sig.dump(t)
			if without {
				relAbsent(t, "signals with WithoutStatements", out, marker)
			} else {
				assert.Contains(t, out, marker, "without WithoutStatements no signal carries the statement: the search is vacuous")
			}
		})
	}
}
