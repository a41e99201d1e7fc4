package pgtest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
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
	if n != 0 {
		t.Fatalf("database b sees a's table")
	}
}

func TestClusterRestart(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, Setting("max_connections", "15"))
	ctx := context.Background()
	var max string
	conn, err := pgx.Connect(ctx, c.DSN())
	require.NoError(t, err)
	if err := conn.QueryRow(ctx, "SHOW max_connections").Scan(&max); err != nil || max != "15" {
		t.Fatalf("max_connections = %q, %v", max, err)
	}
	conn.Close(ctx)
	require.NoError(t, c.Stop("immediate"))
	if _, err := pgx.Connect(ctx, c.DSN()); err == nil {
		t.Fatal("connected to a stopped cluster")
	}
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
		cfgGot, err1 := pgx.ParseConfig(got)
		cfgWant, err2 := pgx.ParseConfig(tc.want)
		if err1 != nil || err2 != nil || cfgGot.Database != cfgWant.Database || cfgGot.RuntimeParams["application_name"] != "x" {
			t.Errorf("WithParams(%q) = %q", tc.in, got)
		}
	}
}

// helperEnv runs TestHelperNeedsServer for real, in a subprocess.
const helperEnv = "PGTEST_HELPER_PROCESS"

// TestHelperNeedsServer is the test binary's stand-in for a package of
// integration tests, run by TestNoServerIsNotGreen in a subprocess.
func TestHelperNeedsServer(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("the subprocess of TestNoServerIsNotGreen")
	}
	for _, name := range []string{"first", "second"} {
		t.Run(name, func(t *testing.T) { NewDatabase(t) })
	}
}

// TestNoServerIsNotGreen: without a server, the suite fails, with one line
// that says what to do, instead of printing ok over skipped tests; it skips
// only when asked to with PGXLEAK_SKIP_DB=1, and never for a DATABASE_URL
// that is set and does not answer.
func TestNoServerIsNotGreen(t *testing.T) {
	t.Parallel()
	const closed = "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2" // nothing listens on port 1
	for _, tc := range []struct {
		name     string
		env      []string
		fail     bool
		mentions []string
	}{
		{"DATABASE_URL does not answer", []string{"DATABASE_URL=" + closed}, true,
			[]string{"DATABASE_URL is set but does not answer"}},
		{"DATABASE_URL does not answer, skip asked", []string{"DATABASE_URL=" + closed, SkipEnv + "=1"}, true,
			[]string{"DATABASE_URL is set but does not answer"}},
		{"no PostgreSQL anywhere", []string{hideLocalEnv + "=1"}, true,
			[]string{"apt-get install postgresql", SkipEnv + "=1"}},
		{"no PostgreSQL anywhere, skip asked", []string{hideLocalEnv + "=1", SkipEnv + "=1"}, false,
			[]string{"skipped on purpose"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperNeedsServer$", "-test.v", "-test.count=1")
			cmd.Env = append(withoutEnv(os.Environ(), "DATABASE_URL", SkipEnv, "PATH"),
				append([]string{helperEnv + "=1", "PATH=" + t.TempDir()}, tc.env...)...) // no initdb on PATH
			out, err := cmd.CombinedOutput()
			if failed := err != nil; failed != tc.fail {
				t.Fatalf("run failed: %v, want %v; output:\n%s", err, tc.fail, out)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(string(out), m) {
					t.Errorf("output does not mention %q:\n%s", m, out)
				}
			}
			if n := strings.Count(string(out), "--- FAIL: TestHelperNeedsServer/"); tc.fail && n != 1 {
				t.Errorf("%d tests failed for the missing server, want one line for the run:\n%s", n, out)
			}
		})
	}
}

func withoutEnv(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, n := range names {
			keep = keep && name != n
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}
