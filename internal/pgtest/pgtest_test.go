package pgtest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(M(m).Run()) }

func TestNewDatabaseIsolated(t *testing.T) {
	t.Parallel()
	a, b := NewDatabase(t), NewDatabase(t)
	Exec(t, a, "CREATE TABLE only_in_a (x int)")
	ctx := context.Background()
	c, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'").Scan(&n); err != nil {
		t.Fatal(err)
	}
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
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SHOW max_connections").Scan(&max); err != nil || max != "15" {
		t.Fatalf("max_connections = %q, %v", max, err)
	}
	conn.Close(ctx)
	if err := c.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.Connect(ctx, c.DSN()); err == nil {
		t.Fatal("connected to a stopped cluster")
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, c.DSN())
	if err != nil {
		t.Fatal(err)
	}
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
				t.Fatalf("%s=%q", helperEnv, need)
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
			cmd.Env = append(withoutEnv(os.Environ(), "DATABASE_URL", SkipEnv, "PATH"),
				append([]string{helperEnv + "=" + tc.need, "PATH=" + t.TempDir()}, tc.env...)...) // no initdb or pgbouncer on PATH
			out, err := cmd.CombinedOutput()
			if failed := err != nil; failed != tc.fail {
				t.Fatalf("run failed: %v, want %v; output:\n%s", err, tc.fail, out)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(string(out), m) {
					t.Errorf("output does not mention %q:\n%s", m, out)
				}
			}
			if n := strings.Count(string(out), "--- FAIL: TestHelperNeeds/"); tc.fail && n != 1 {
				t.Errorf("%d tests failed for the missing dependency, want one line for the run:\n%s", n, out)
			}
			if n := strings.Count(string(out), "--- SKIP: TestHelperNeeds/"); !tc.fail && n != 2 {
				t.Errorf("%d tests skipped, want both:\n%s", n, out)
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
