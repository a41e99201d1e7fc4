package pgtest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { os.Exit(M(m).Run()) }

func TestNewDatabaseIsolated(t *testing.T) {
	t.Parallel()
	a, b := NewDatabase(t), NewDatabase(t)
	Exec(t, a, "CREATE TABLE only_in_a (x int)")
	ctx := context.Background()
	c, err := pgx.Connect(ctx, b)
	require.NoError(t, err)
	defer c.Close(ctx)
	var n int
	require.NoError(t, c.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'").Scan(&n))
	assert.Zero(t, n, "database b sees a's table")
}

func TestClusterRestart(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, Setting("max_connections", "15"))
	ctx := context.Background()
	var max string
	conn, err := pgx.Connect(ctx, c.DSN())
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(ctx, "SHOW max_connections").Scan(&max))
	require.Equal(t, "15", max, "max_connections")
	conn.Close(ctx)
	require.NoError(t, c.Stop("immediate"))
	_, err = pgx.Connect(ctx, c.DSN())
	require.Error(t, err, "connected to a stopped cluster")
	require.NoError(t, c.Start())
	conn, err = pgx.Connect(ctx, c.DSN())
	require.NoError(t, err)
	conn.Close(ctx)
}

func TestWithParams(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u@h:5/db?sslmode=disable", "postgres://u@h:5/x?application_name=x&sslmode=disable"},
		{"host=h user=u", "host=h user=u dbname='x' application_name='x'"},
	} {
		got := WithParams(tc.in, map[string]string{"dbname": "x", "application_name": "x"})
		cfgGot, err := pgx.ParseConfig(got)
		require.NoError(t, err, "WithParams(%q) = %q", tc.in, got)
		cfgWant, err := pgx.ParseConfig(tc.want)
		require.NoError(t, err)
		assert.Equal(t, cfgWant.Database, cfgGot.Database, "WithParams(%q) = %q", tc.in, got)
		assert.Equal(t, "x", cfgGot.RuntimeParams["application_name"], "WithParams(%q) = %q", tc.in, got)
	}
}

// helperEnv runs TestHelperNeeds for real, in a subprocess: its value
// names what the helper needs, "server" or "pgbouncer".
const helperEnv = "PGTEST_HELPER_PROCESS"

// TestHelperNeeds is the test binary's stand-in for a package of
// integration tests, run by TestMissingIsNotGreen in a subprocess.
func TestHelperNeeds(t *testing.T) {
	need := os.Getenv(helperEnv)
	if need == "" {
		t.Skip("the subprocess of TestMissingIsNotGreen")
	}
	for _, name := range []string{"first", "second"} {
		t.Run(name, func(t *testing.T) {
			switch need {
			case "server":
				NewDatabase(t)
			case "pgbouncer":
				NewPgBouncer(t)
			default:
				require.Failf(t, "unknown dependency", "%s=%q", helperEnv, need)
			}
		})
	}
}

// TestMissingIsNotGreen: without a server, or without pgbouncer, the suite
// fails, with one line that says what to do, instead of printing ok over
// skipped tests; it skips only when PGXLEAK_SKIP names the dependency, and
// never for a DATABASE_URL that is set and does not answer.
func TestMissingIsNotGreen(t *testing.T) {
	t.Parallel()
	const closed = "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2" // nothing listens on port 1
	for _, tc := range []struct {
		name     string
		need     string
		env      []string
		fail     bool
		mentions []string
	}{
		{"DATABASE_URL does not answer", "server", []string{"DATABASE_URL=" + closed}, true,
			[]string{"DATABASE_URL is set but does not answer"}},
		{"DATABASE_URL does not answer, skip asked", "server", []string{"DATABASE_URL=" + closed, SkipEnv + "=postgres"}, true,
			[]string{"DATABASE_URL is set but does not answer"}},
		{"no PostgreSQL anywhere", "server", []string{hideLocalEnv + "=1"}, true,
			[]string{"apt-get install postgresql", "./scripts/test.sh installs it", SkipEnv + "=postgres"}},
		{"no PostgreSQL anywhere, another skip asked", "server", []string{hideLocalEnv + "=1", SkipEnv + "=pgbouncer,chromium"}, true,
			[]string{"apt-get install postgresql", SkipEnv + "=postgres"}},
		{"no PostgreSQL anywhere, skip asked", "server", []string{hideLocalEnv + "=1", SkipEnv + "=chromium, postgres"}, false,
			[]string{"skipped on purpose: PGXLEAK_SKIP names postgres"}},
		{"no pgbouncer", "pgbouncer", []string{hideLocalEnv + "=1"}, true,
			[]string{"no pgbouncer on PATH", "apt-get install pgbouncer", SkipEnv + "=pgbouncer"}},
		{"no pgbouncer, skip asked", "pgbouncer", []string{hideLocalEnv + "=1", SkipEnv + "=pgbouncer"}, false,
			[]string{"skipped on purpose: PGXLEAK_SKIP names pgbouncer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperNeeds$", "-test.v", "-test.count=1")
			cmd.Env = append(WithoutEnv(os.Environ(), "DATABASE_URL", SkipEnv, "PATH"),
				append([]string{helperEnv + "=" + tc.need, "PATH=" + t.TempDir()}, tc.env...)...) // no initdb or pgbouncer on PATH
			out, err := cmd.CombinedOutput()
			require.Equal(t, tc.fail, err != nil, "run failed: %v; output:\n%s", err, out)
			for _, m := range tc.mentions {
				assert.Contains(t, string(out), m)
			}
			if tc.fail {
				assert.Equal(t, 1, strings.Count(string(out), "--- FAIL: TestHelperNeeds/"),
					"tests failed for the missing dependency, want one line for the run:\n%s", out)
			} else {
				assert.Equal(t, 2, strings.Count(string(out), "--- SKIP: TestHelperNeeds/"),
					"tests skipped, want both:\n%s", out)
			}
		})
	}
}
