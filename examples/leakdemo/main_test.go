package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// throwawayLine is the one line the demo prints when it starts its own
// cluster; the groups are the binaries' directory and the cluster's.
var throwawayLine = regexp.MustCompile(`^leakdemo: no usable PostgreSQL at 127\.0\.0\.1:1 \(connection refused\); using a throwaway cluster from (\S+) in (\S+), removed on exit$`)

// TestThrowawayCluster runs the demo as a newcomer would on a machine where
// PostgreSQL is not running (no DATABASE_URL, nothing on the local port):
// it says in one line that it starts a cluster of its own, shows the
// leak, exits 0, and leaves nothing behind in the temporary directory;
// the same after Ctrl-C in -http mode, which never ends by itself.
func TestThrowawayCluster(t *testing.T) {
	if pgtest.OptedOut(pgtest.DepPostgres) {
		t.Skipf("skipped on purpose: %s names %s", pgtest.SkipEnv, pgtest.DepPostgres)
	}
	bin := filepath.Join(t.TempDir(), "leakdemo")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	for _, tc := range []struct {
		name     string
		args     []string
		ctrlC    string // interrupt the demo once it printed this
		exitCode int
		mentions []string
	}{
		{name: "to the end", exitCode: 0,
			mentions: []string{fmt.Sprintf("leakdemo/main.go:%d (main.(*server).leaky)", lineOf(t, "main.go", "BUG: never committed")), "drained; still out at shutdown"}},
		{name: "Ctrl-C", args: []string{"-http", "127.0.0.1:0"}, ctrlC: "leakdemo: round 1", exitCode: 130},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A temporary directory of its own shows whatever the demo
			// leaves behind; when running as root the cluster runs as
			// nobody, who must be able to enter it.
			tmp, err := os.MkdirTemp("", "leakdemo-test-")
			require.NoError(t, err)
			t.Cleanup(func() { _ = os.RemoveAll(tmp) })
			require.NoError(t, os.Chmod(tmp, 0o755))

			cmd := exec.Command(bin, tc.args...)
			cmd.Env = append(pgtest.WithoutEnv(os.Environ(), "DATABASE_URL", "TMPDIR", localAddrEnv),
				localAddrEnv+"=127.0.0.1:1", // nothing listens on port 1
				"TMPDIR="+tmp)
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			require.NoError(t, cmd.Start())
			var lines []string
			for sc := bufio.NewScanner(stdout); sc.Scan(); {
				lines = append(lines, sc.Text())
				if tc.ctrlC != "" && strings.HasPrefix(sc.Text(), tc.ctrlC) {
					require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
				}
			}
			err = cmd.Wait()
			output := strings.Join(lines, "\n") + "\n" + stderr.String()
			require.Equal(t, tc.exitCode, cmd.ProcessState.ExitCode(), "%v; output:\n%s", err, output)

			require.NotEmpty(t, lines, "no output; stderr:\n%s", stderr.String())
			m := throwawayLine.FindStringSubmatch(lines[0])
			require.NotNil(t, m, "first line %q is not the throwaway cluster's", lines[0])
			assert.Equal(t, 1, strings.Count(output, "throwaway"), "one line about the cluster:\n%s", output)
			assert.True(t, strings.HasPrefix(m[2], tmp+string(filepath.Separator)), "cluster %s outside TMPDIR %s", m[2], tmp)
			for _, s := range tc.mentions {
				assert.Contains(t, output, s)
			}

			_, err = os.Stat(m[2])
			assert.True(t, os.IsNotExist(err), "the cluster's directory is still there: %v", err)
			left, err := os.ReadDir(tmp)
			require.NoError(t, err)
			assert.Empty(t, left, "the demo left these in TMPDIR")
			assert.Eventually(t, func() bool { return !postgresRunsIn(t, m[2]) }, 10*time.Second, 20*time.Millisecond,
				"a postgres of the throwaway cluster still runs")
		})
	}
}

// postgresRunsIn reports whether a process's command line names dir (the
// postmaster's -D and -k arguments do).
func postgresRunsIn(t *testing.T, dir string) bool {
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	require.NoError(t, err)
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), dir) {
			return true
		}
	}
	return false
}

// lineOf returns the number of the first line of file that contains s, so
// that the expected report follows the demo's source.
func lineOf(t *testing.T, file, s string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	for i, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, s) {
			return i + 1
		}
	}
	require.FailNow(t, "no such line", "%s has no line with %q", file, s)
	return 0
}
