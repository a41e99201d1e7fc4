package pgxleak_test

import (
	"database/sql"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

func TestRegisteredDriver(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	db, err := sql.Open("pgxleak", dsn)
	require.NoError(t, err)
	defer db.Close()
	require.IsType(t, &pgxleak.Driver{}, db.Driver())
	var n int
	require.NoError(t, db.QueryRow("SELECT 41 + 1").Scan(&n))
	require.Equal(t, 42, n)
	st := pgxleak.Stats(db)
	require.EqualValues(t, 1, st.Checkouts, "checkouts tracked")
	require.EqualValues(t, 1, st.Returns, "returns tracked")
	require.Zero(t, st.CheckedOut)
	pgxleak.VerifyNone(t, db)
}

func TestOpenUnknownDriver(t *testing.T) {
	_, err := pgxleak.Open("no-such-driver", "whatever")
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "pgxleak:"), "err = %v: want a pgxleak error", err)
	assert.Contains(t, err.Error(), "no-such-driver", "the error names the driver")
}

// TestOpenErrorsHidePassword covers bad DSNs and unreachable hosts: the
// error must say what went wrong without the password.
func TestOpenErrorsHidePassword(t *testing.T) {
	const pw = "s3cr3t-pa55"
	for _, tc := range []struct{ name, dsn string }{
		{"bad port", "postgres://app:" + pw + "@127.0.0.1:notaport/db"},
		{"bad url", "postgres://app:" + pw + "@[::1/db"},
		{"unreachable", "postgres://app:" + pw + "@127.0.0.1:1/db?connect_timeout=2"},
		{"keyword form", "host=127.0.0.1 port=1 user=app password=" + pw + " connect_timeout=2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := pgxleak.Open("pgx", tc.dsn, pgxleak.WithMinIdleConns(1))
			if err == nil {
				db.Close()
			}
			require.Error(t, err, "Open succeeded")
			assert.NotContains(t, err.Error(), pw, "the error contains the password")
		})
	}
}

// FuzzOpenDSN opens pools on arbitrary DSNs without connecting, through
// every entry point: no panic, and an error never quotes a password that
// the DSN gives pgx (as password=... or in URL user info).
func FuzzOpenDSN(f *testing.F) {
	for _, s := range []string{
		"postgres://app:s3cret@127.0.0.1:5432/db?sslmode=disable",
		"host=127.0.0.1 port=5432 user=app password=s3cret dbname=db",
		"postgres://app:s3cret@127.0.0.1:5432/db?default_query_exec_mode=cache_statement",
		"postgres://app:s3c%ret@[::1/db",
		"host='unterminated password=s3cret",
		"",
		"::::",
	} {
		f.Add(s)
	}
	pw := regexp.MustCompile(`(?i)password\s*=\s*'?([^\s'&]{4,})|://[^:/@]*:([^@/]{4,})@`)
	f.Fuzz(func(t *testing.T, dsn string) {
		for _, p := range []string{"passfile", "service", "sslcert", "sslkey", "sslrootcert", "sslcrl"} {
			if strings.Contains(strings.ToLower(dsn), p) {
				t.Skip() // makes pgx read files
			}
		}
		var secrets []string
		for _, m := range pw.FindAllStringSubmatch(dsn, -1) {
			for _, s := range m[1:] {
				// Only a password that appears once: elsewhere in the DSN it
				// may be a host or database name an error rightly quotes.
				if s != "" && strings.Count(dsn, s) == 1 {
					secrets = append(secrets, s)
				}
			}
		}
		check := func(what string, err error) {
			if err == nil {
				return
			}
			for _, s := range secrets {
				require.NotContains(t, err.Error(), s, "%s(%q): the error contains the password", what, dsn)
			}
		}
		for _, driverName := range []string{"pgx", pgxleak.DriverName} {
			db, err := pgxleak.Open(driverName, dsn, pgxleak.WithLogger(nil), pgxleak.WithPgBouncer())
			check("Open "+driverName, err)
			if err == nil {
				st := pgxleak.Stats(db)
				require.Zero(t, st.CheckedOut, "Open connected")
				require.Zero(t, st.OpenConnections, "Open connected")
				require.NoError(t, db.Close(), "Close")
			}
		}
		db, err := sql.Open(pgxleak.DriverName, dsn)
		check("sql.Open", err)
		if err == nil {
			_ = db.Close()
		}
	})
}

// TestPoolNameHasNoCredentials: the default name is host:port/database.
func TestPoolNameHasNoCredentials(t *testing.T) {
	dsn := pgtest.WithParams(pgtest.NewDatabase(t), map[string]string{"password": "hunter2"})
	db, err := pgxleak.Open("pgx", dsn)
	require.NoError(t, err)
	defer db.Close()
	c, err := db.Conn(t.Context())
	require.NoError(t, err)
	defer c.Close()
	cs := pgxleak.Checkouts(db)
	require.Len(t, cs, 1)
	name := cs[0].Pool
	assert.NotContains(t, name, "hunter2", "the pool's name shows the password")
	assert.NotContains(t, name, "postgres@", "the pool's name shows the user")
	assert.Contains(t, name, ":", "the pool's name is host:port")
}

// TestOpenIdleInTransactionTimeout: the option reaches every session Open
// makes, in the startup message; OpenDB, which cannot change a connector's
// configuration, says how to set it instead.
func TestOpenIdleInTransactionTimeout(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithIdleInTransactionTimeout(1500*time.Millisecond))
	var got string
	require.NoError(t, db.QueryRow("SHOW idle_in_transaction_session_timeout").Scan(&got))
	assert.Equal(t, "1500ms", got, "idle_in_transaction_session_timeout")
	plain, _ := openTest(t)
	require.NoError(t, plain.QueryRow("SHOW idle_in_transaction_session_timeout").Scan(&got))
	assert.Equal(t, "0", got, "by default idle_in_transaction_session_timeout is the server's")
	_, err := pgxleak.OpenDB(stdlib.GetConnector(pgx.ConnConfig{}), pgxleak.WithIdleInTransactionTimeout(time.Second))
	assert.ErrorContains(t, err, `RuntimeParams["idle_in_transaction_session_timeout"]`, "OpenDB with WithIdleInTransactionTimeout says how to set it")
}
