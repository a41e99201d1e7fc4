package pgxleak_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestWithPgBouncerDSN checks the DSN WithPgBouncer gives pgx, through the
// escape hatch: exec mode added to URL and key=value DSNs, an explicit safe
// mode kept, an unsafe one refused, other drivers' DSNs untouched.
func TestWithPgBouncerDSN(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	cfg, err := pgx.ParseConfig(dsn)
	require.NoError(t, err)
	kv := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", cfg.Host, cfg.Port, cfg.User, cfg.Database)
	for _, tc := range []struct {
		name    string
		dsn     string
		want    pgx.QueryExecMode
		wantErr string
	}{
		{name: "URL", dsn: dsn, want: pgx.QueryExecModeExec},
		{name: "key=value", dsn: kv, want: pgx.QueryExecModeExec},
		{name: "explicit simple_protocol kept", dsn: kv + " default_query_exec_mode=simple_protocol", want: pgx.QueryExecModeSimpleProtocol},
		{name: "explicit exec kept", dsn: pgtest.WithParams(dsn, map[string]string{"default_query_exec_mode": "exec"}), want: pgx.QueryExecModeExec},
		{name: "explicit cache_statement refused", dsn: pgtest.WithParams(dsn, map[string]string{"default_query_exec_mode": "cache_statement"}), wantErr: "pgxleak: WithPgBouncer"},
		{name: "explicit describe_exec refused", dsn: kv + " default_query_exec_mode=describe_exec", wantErr: "pgxleak: WithPgBouncer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := pgxleak.Open("pgx", tc.dsn, pgxleak.WithPgBouncer(), pgxleak.WithLogger(quiet))
			if tc.wantErr != "" {
				require.Error(t, err)
				require.True(t, strings.HasPrefix(err.Error(), tc.wantErr), "Open = %v, want an error starting %q", err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			defer db.Close()
			assert.Equal(t, tc.want, compatExecMode(t, db), "exec mode")
		})
	}
	t.Run("without WithPgBouncer pgx's default stays", func(t *testing.T) {
		db, err := pgxleak.Open("pgx", dsn, pgxleak.WithLogger(quiet))
		require.NoError(t, err)
		defer db.Close()
		assert.Equal(t, pgx.QueryExecModeCacheStatement, compatExecMode(t, db), "exec mode: pgx's default")
	})
}

// TestWithPgBouncerOpenDB checks WithPgBouncer over a connector it cannot
// reconfigure: a pgx config in the default mode is refused at connect time
// with a pgxleak error, one in exec mode works.
func TestWithPgBouncerOpenDB(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	cfg, err := pgx.ParseConfig(dsn)
	require.NoError(t, err)
	bad, err := pgxleak.OpenDB(stdlib.GetConnector(*cfg), pgxleak.WithPgBouncer(), pgxleak.WithLogger(quiet))
	require.NoError(t, err)
	defer bad.Close()
	err = bad.PingContext(t.Context())
	if assert.Error(t, err, "Ping with a cache_statement connector") {
		assert.True(t, strings.HasPrefix(err.Error(), "pgxleak: WithPgBouncer"), "Ping with a cache_statement connector = %v, want a pgxleak error", err)
		assert.Contains(t, err.Error(), "QueryExecModeExec", "the error names the mode to use")
	}
	assert.Zero(t, bad.Stats().OpenConnections, "connections left open after refusing them")

	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	good, err := pgxleak.OpenDB(stdlib.GetConnector(*cfg), pgxleak.WithPgBouncer(), pgxleak.WithLogger(quiet))
	require.NoError(t, err)
	defer good.Close()
	var n int
	require.NoError(t, good.QueryRowContext(t.Context(), "SELECT $1::int", 7).Scan(&n), "query with an exec-mode connector")
	require.Equal(t, 7, n, "query with an exec-mode connector")
	assert.Equal(t, pgx.QueryExecModeExec, compatExecMode(t, good), "exec mode")
	pgxleak.VerifyNone(t, good)
}

// TestWithPgBouncerParsesLikePgx: the profile works on every DSN pgx
// accepts, including ones net/url rejects (several hosts) or reads
// differently (a '#' in the password), because it sets the exec mode on
// pgx's parsed config instead of rewriting the DSN's text.
func TestWithPgBouncerParsesLikePgx(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	cfg, err := pgx.ParseConfig(dsn)
	require.NoError(t, err)
	for _, tc := range []struct{ name, dsn string }{
		{"two hosts", fmt.Sprintf("postgres://%s@%s:%d,%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, cfg.Host, cfg.Port, cfg.Database)},
		{"hash in password", fmt.Sprintf("postgres://%s:pa#ss@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, cfg.Database)},
		{"keyword form", fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", cfg.Host, cfg.Port, cfg.User, cfg.Database)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := pgx.ParseConfig(tc.dsn); err != nil {
				t.Skipf("pgx does not accept it either: %v", err)
			}
			db, err := pgxleak.Open("pgx", tc.dsn, pgxleak.WithPgBouncer(), pgxleak.WithLogger(nil))
			require.NoError(t, err)
			defer db.Close()
			c, err := db.Conn(t.Context())
			require.NoError(t, err)
			defer c.Close()
			err = c.Raw(func(dc any) error {
				pc, _ := pgxleak.PgxConn(dc)
				assert.Equal(t, pgx.QueryExecModeExec, pc.Config().DefaultQueryExecMode, "exec mode")
				return nil
			})
			require.NoError(t, err)
		})
	}
}
