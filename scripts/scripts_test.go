// Package scripts tests the set-up scripts the README's two commands run
// (demo.sh, test.sh and the setup.sh they share), on a simulated bare
// machine: PATH holds only a few tools and fakes of apt-get, sudo, id and
// go, and PGXLEAK_PGTEST_HIDE_LOCAL=1 hides what is installed off PATH.
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// machine is a simulated machine: a PATH directory with the tools the
// scripts use and the fakes, and the log the fakes write their calls to.
type machine struct {
	bin, log string
}

// fakeAptGet records its call and "installs" packages by dropping an
// executable on PATH for each one the scripts look for.
const fakeAptGet = `#!/bin/bash
echo "apt-get $*" >>"$FAKE_LOG"
[[ " $* " == *" install "* ]] || exit 0
for pkg in "$@"; do
	case $pkg in
	postgresql) touch "$FAKE_BIN/initdb" ;;
	pgbouncer | chromium | gcc) touch "$FAKE_BIN/$pkg" ;;
	prometheus) touch "$FAKE_BIN/prometheus" "$FAKE_BIN/promtool" ;;
	*) continue ;;
	esac
	chmod +x "$FAKE_BIN"/*
done
`

// fakeSudo stands for passwordless sudo.
const fakeSudo = `#!/bin/bash
[ "$*" = "-n true" ] && exit 0
echo "sudo $*" >>"$FAKE_LOG"
exec "$@"
`

// fakeID answers id -u as root, or as a user who is not root.
const (
	fakeRoot = "#!/bin/bash\n[ \"$1\" = -u ] && echo 0\n"
	fakeUser = "#!/bin/bash\n[ \"$1\" = -u ] && echo 1000\n"
)

// fakeGo answers go env CC as the real one does, and records go run and
// go test.
const fakeGo = `#!/bin/bash
case $1 in
env) echo gcc ;;
run) echo "go $*" >>"$FAKE_LOG" ;;
test) echo "go $*" >>"$FAKE_LOG"; echo "ok  (fake go test)"; exit "${FAKE_GO_STATUS:-0}" ;;
esac
`

// newMachine returns a machine whose PATH has the tools the scripts and
// the fakes use, the fakes (name to script) and nothing else.
func newMachine(t *testing.T, fakes map[string]string) *machine {
	t.Helper()
	m := &machine{bin: t.TempDir(), log: filepath.Join(t.TempDir(), "calls")}
	for _, tool := range []string{"bash", "env", "dirname", "mktemp", "tail", "rm", "chmod", "touch"} {
		p, err := exec.LookPath(tool)
		require.NoError(t, err)
		require.NoError(t, os.Symlink(p, filepath.Join(m.bin, tool)))
	}
	for name, script := range fakes {
		require.NoError(t, os.WriteFile(filepath.Join(m.bin, name), []byte(script), 0o755))
	}
	return m
}

// run runs a script of this directory with args on the machine, in an
// environment of its own plus env, and returns its stdout, stderr and
// exit code.
func (m *machine) run(t *testing.T, env []string, script string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(m.bin, "bash"), append([]string{script}, args...)...)
	cmd.Env = append([]string{"PATH=" + m.bin, "FAKE_LOG=" + m.log, "FAKE_BIN=" + m.bin, "PGXLEAK_PGTEST_HIDE_LOCAL=1"}, env...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// calls returns the fakes' calls so far, one a line.
func (m *machine) calls(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(m.log)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// apt is how setup.sh's apt-get calls reach the fake, after sudo and env.
const apt = "apt-get -o DPkg::Lock::Timeout=600 -y -q "

// TestSetupBareMachine: on a machine with only Go (and bash), setup.sh
// installs what each command needs with apt-get, as root or through
// passwordless sudo, and says so in one line; run again, it does nothing
// and prints nothing. When it may not install, it says in one line what
// to install and how to opt out, and fails.
func TestSetupBareMachine(t *testing.T) {
	const all = "gcc libc6-dev postgresql pgbouncer chromium prometheus"
	sudo := "sudo env DEBIAN_FRONTEND=noninteractive " + apt
	for _, tc := range []struct {
		name   string
		what   string
		fakes  map[string]string
		env    []string
		code   int
		stderr string   // all of it
		calls  []string // by the fakes, in order
	}{
		{name: "test, root", what: "test", fakes: map[string]string{"apt-get": fakeAptGet, "id": fakeRoot},
			stderr: "pgxleak: installing " + all + " (apt-get; once)\n",
			calls:  []string{apt + "update", apt + "install " + all}},
		{name: "test, root, opted out", what: "test", fakes: map[string]string{"apt-get": fakeAptGet, "id": fakeRoot},
			env:    []string{"PGXLEAK_SKIP=pgbouncer, chromium,prometheus"},
			stderr: "pgxleak: installing gcc libc6-dev postgresql (apt-get; once)\n",
			calls:  []string{apt + "update", apt + "install gcc libc6-dev postgresql"}},
		{name: "test, passwordless sudo", what: "test", fakes: map[string]string{"apt-get": fakeAptGet, "id": fakeUser, "sudo": fakeSudo},
			stderr: "pgxleak: installing " + all + " (apt-get; once)\n",
			calls:  []string{sudo + "update", apt + "update", sudo + "install " + all, apt + "install " + all}},
		{name: "test, no root, no sudo", what: "test", fakes: map[string]string{"apt-get": fakeAptGet, "id": fakeUser}, code: 1,
			stderr: "pgxleak: missing " + all + ": install them (sudo apt-get install " + all +
				") and run this again; or opt out with PGXLEAK_SKIP=postgres,pgbouncer,chromium,prometheus\n"},
		{name: "test, no apt-get", what: "test", fakes: map[string]string{"id": fakeRoot}, code: 1,
			stderr: "pgxleak: missing " + all + " (Debian package names): install them with your package manager; or opt out with PGXLEAK_SKIP=postgres,pgbouncer,chromium,prometheus\n"},
		{name: "test, unknown opt-out", what: "test", fakes: map[string]string{"apt-get": fakeAptGet, "id": fakeRoot}, code: 2,
			env:    []string{"PGXLEAK_SKIP=pgbouncr"},
			stderr: "pgxleak: PGXLEAK_SKIP=pgbouncr names 'pgbouncr'; it takes postgres, pgbouncer, chromium and prometheus\n"},
		{name: "demo, root", what: "demo", fakes: map[string]string{"apt-get": fakeAptGet, "id": fakeRoot},
			stderr: "pgxleak: installing postgresql (apt-get; once)\n",
			calls:  []string{apt + "update", apt + "install postgresql"}},
		{name: "demo, no root, no sudo", what: "demo", fakes: map[string]string{"apt-get": fakeAptGet, "id": fakeUser}, code: 1,
			stderr: "pgxleak: missing postgresql: install them (sudo apt-get install postgresql) and run this again; or set DATABASE_URL\n"},
		{name: "demo, DATABASE_URL", what: "demo", fakes: map[string]string{"apt-get": fakeAptGet, "id": fakeRoot},
			env: []string{"DATABASE_URL=postgres://db.example/app"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fakes := map[string]string{"go": fakeGo}
			for k, v := range tc.fakes {
				fakes[k] = v
			}
			m := newMachine(t, fakes)
			stdout, stderr, code := m.run(t, tc.env, "setup.sh", tc.what)
			assert.Equal(t, tc.code, code, "exit code; stderr:\n%s", stderr)
			assert.Empty(t, stdout)
			assert.Equal(t, tc.stderr, stderr)
			assert.Equal(t, tc.calls, m.calls(t))
			if tc.code != 0 {
				return
			}
			// Everything is there now: again, nothing happens, quietly.
			stdout, stderr, code = m.run(t, tc.env, "setup.sh", tc.what)
			assert.Equal(t, 0, code, "exit code of the second run; stderr:\n%s", stderr)
			assert.Empty(t, stdout+stderr, "the second run")
			assert.Equal(t, tc.calls, m.calls(t), "the second run called")
		})
	}
}

// TestTestCommand: test.sh runs the set-up, then go test with -race over
// the three modules, and prints the opt-out, if any, as its last line,
// naming what it skipped, whether the tests passed or not, keeping go
// test's exit code.
func TestTestCommand(t *testing.T) {
	goTest := "go test -race -timeout 15m ./... ./examples/... ./integration/..."
	for _, tc := range []struct {
		name, skip, goStatus, last string
		absent                     []string // of pgbouncer and chromium
		code                       int
	}{
		{name: "no opt-out", last: "ok  (fake go test)"},
		{name: "opted out", skip: "pgbouncer,chromium", absent: []string{"pgbouncer", "chromium"},
			last: "pgxleak: NOT TESTED, on purpose (PGXLEAK_SKIP=pgbouncer,chromium): the tests that need pgbouncer, chromium skipped"},
		{name: "opted out, tests fail", skip: "chromium", absent: []string{"chromium"}, goStatus: "1", code: 1,
			last: "pgxleak: NOT TESTED, on purpose (PGXLEAK_SKIP=chromium): the tests that need chromium skipped"},
		{name: "opted out, one there", skip: "pgbouncer,chromium", absent: []string{"chromium"},
			last: "pgxleak: NOT TESTED, on purpose (PGXLEAK_SKIP=pgbouncer,chromium): the tests that need chromium skipped"},
		{name: "opted out, all there", skip: "chromium",
			last: "pgxleak: PGXLEAK_SKIP=chromium, but nothing it names is missing: every test ran"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tools := map[string]string{"go": fakeGo, "id": fakeRoot, "apt-get": fakeAptGet, "gcc": "", "initdb": "", "prometheus": "", "promtool": ""}
			for _, dep := range []string{"pgbouncer", "chromium"} {
				if !slices.Contains(tc.absent, dep) {
					tools[dep] = ""
				}
			}
			m := newMachine(t, tools)
			stdout, stderr, code := m.run(t, []string{"PGXLEAK_SKIP=" + tc.skip, "FAKE_GO_STATUS=" + tc.goStatus}, "test.sh")
			assert.Equal(t, tc.code, code, "exit code; stderr:\n%s", stderr)
			assert.Empty(t, stderr)
			lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
			assert.Equal(t, tc.last, lines[len(lines)-1], "the last line of:\n%s", stdout)
			assert.Equal(t, []string{goTest}, m.calls(t), "no apt-get, one go test")
		})
	}
}

// TestDemoCommand: demo.sh runs the set-up, then the demo with its
// arguments.
func TestDemoCommand(t *testing.T) {
	m := newMachine(t, map[string]string{"go": fakeGo, "id": fakeRoot, "apt-get": fakeAptGet})
	stdout, stderr, code := m.run(t, nil, "demo.sh", "-http", ":8080")
	assert.Equal(t, 0, code, "exit code; stderr:\n%s", stderr)
	assert.Empty(t, stdout)
	assert.Equal(t, "pgxleak: installing postgresql (apt-get; once)\n", stderr)
	assert.Equal(t, []string{apt + "update", apt + "install postgresql", "go run ./examples/leakdemo -http :8080"}, m.calls(t))
}
