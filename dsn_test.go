package pgxleak_test

import (
	"database/sql"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

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
		for _, driverName := range []string{"pgx", "pgxleak"} {
			db, err := pgxleak.Open(driverName, dsn, pgxleak.WithLogger(nil), pgxleak.WithPgBouncer())
			check("Open "+driverName, err)
			if err == nil {
				st := stats(t, db)
				require.Zero(t, st.CheckedOut, "Open connected")
				require.Zero(t, st.OpenConnections, "Open connected")
				require.NoError(t, db.Close(), "Close")
			}
		}
		db, err := sql.Open("pgxleak", dsn)
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
	cs := checkouts(t, db)
	require.Len(t, cs, 1)
	name := cs[0].Pool
	assert.NotContains(t, name, "hunter2", "the pool's name shows the password")
	assert.NotContains(t, name, "postgres@", "the pool's name shows the user")
	assert.Contains(t, name, ":", "the pool's name is host:port")
}
