package pgxleak_test

import (
	"database/sql"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

func TestRegisteredDriver(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	db, err := sql.Open("pgxleak", dsn)
	require.NoError(t, err)
	defer db.Close()
	if _, ok := db.Driver().(*pgxleak.Driver); !ok {
		t.Fatalf("Driver() = %T, want *pgxleak.Driver", db.Driver())
	}
	var n int
	if err := db.QueryRow("SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("query = %d, %v", n, err)
	}
	st := pgxleak.Stats(db)
	if st.Checkouts != 1 || st.Returns != 1 || st.CheckedOut != 0 {
		t.Fatalf("tracker stats = %+v, want 1 checkout, 1 return", st)
	}
	pgxleak.VerifyNone(t, db)
}

func TestOpenUnknownDriver(t *testing.T) {
	_, err := pgxleak.Open("no-such-driver", "whatever")
	if err == nil || !strings.HasPrefix(err.Error(), "pgxleak:") || !strings.Contains(err.Error(), "no-such-driver") {
		t.Fatalf("err = %v", err)
	}
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
				t.Fatal("Open succeeded")
			}
			if strings.Contains(err.Error(), pw) {
				t.Fatalf("error contains the password: %v", err)
			}
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
				if strings.Contains(err.Error(), s) {
					t.Fatalf("%s(%q): error %q contains the password %q", what, dsn, err, s)
				}
			}
		}
		for _, driverName := range []string{"pgx", pgxleak.DriverName} {
			db, err := pgxleak.Open(driverName, dsn, pgxleak.WithLogger(nil), pgxleak.WithPgBouncer())
			check("Open "+driverName, err)
			if err == nil {
				if st := pgxleak.Stats(db); st.CheckedOut != 0 || st.OpenConnections != 0 {
					t.Fatalf("Open connected: %+v", st)
				}
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
	if len(cs) != 1 {
		t.Fatalf("Checkouts = %v", cs)
	}
	if name := cs[0].Pool; strings.Contains(name, "hunter2") || strings.Contains(name, "postgres@") || !strings.Contains(name, ":") {
		t.Fatalf("pool name %q", name)
	}
}

// TestOpenIdleInTransactionTimeout: the option reaches every session Open
// makes, in the startup message; OpenDB, which cannot change a connector's
// configuration, says how to set it instead.
func TestOpenIdleInTransactionTimeout(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithIdleInTransactionTimeout(1500*time.Millisecond))
	var got string
	require.NoError(t, db.QueryRow("SHOW idle_in_transaction_session_timeout").Scan(&got))
	if got != "1500ms" {
		t.Errorf("idle_in_transaction_session_timeout = %q, want 1500ms", got)
	}
	plain, _ := openTest(t)
	require.NoError(t, plain.QueryRow("SHOW idle_in_transaction_session_timeout").Scan(&got))
	if got != "0" {
		t.Errorf("by default idle_in_transaction_session_timeout = %q, want the server's 0", got)
	}
	_, err := pgxleak.OpenDB(stdlib.GetConnector(pgx.ConnConfig{}), pgxleak.WithIdleInTransactionTimeout(time.Second))
	if err == nil || !strings.Contains(err.Error(), `RuntimeParams["idle_in_transaction_session_timeout"]`) {
		t.Errorf("OpenDB with WithIdleInTransactionTimeout: %v, want an error saying how to set it", err)
	}
}
