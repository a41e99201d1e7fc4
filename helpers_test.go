// Shared helpers for the root package's tests, which mirror the source
// files (checkout_test.go tests checkout.go, and so on); cross-cutting
// suites are named for what they prove (compat_*, reliability_*, bench,
// example). Tests are named TestFuncBehaviour in camel case, without
// underscores (TestDrainWaitsForReturns, TestLeakConnNeverClosed), as
// every test here already is. Polling uses pgtest.WaitFor; the one fake
// driver is internal/testdriver and the one leak recorder
// internal/leaktest's Recorder. Assertions use testify: require where the
// test cannot go on, assert where it can.
package pgxleak_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestMain checks, after the tests passed, that no pool opened through
// pgxleak has a connection still out and that no goroutine leaked. Tests
// that leak on purpose close their pools; the Tx and Rows goroutines such
// leaks strand inside database/sql are expected.
func TestMain(m *testing.M) {
	pgxleak.VerifyTestMain(testMain{m}, pgxleak.WithGracePeriod(2*time.Second),
		// Rows dropped on purpose, to test how the loss is reported: their
		// connections never come back, and VerifyTestMain checks closed
		// pools too.
		pgxleak.WithIgnoredFunction("github.com/pgxleak/pgxleak_test.leakRows"),
		pgxleak.WithIgnoredFunction("github.com/pgxleak/pgxleak_test.leakRowsKept"),
		pgxleak.WithIgnoredFunction("github.com/pgxleak/pgxleak_test.leakQueryRow"),
		pgxleak.WithIgnoredFunction("github.com/pgxleak/pgxleak_test.dropRows"),
		pgxleak.WithIgnoredFunction("github.com/pgxleak/pgxleak_test.gcwatchDropRows"),
		pgxleak.WithIgnoredFunction("github.com/pgxleak/pgxleak_test.leakOnPurpose"),
		pgxleak.WithIgnoredFunction("github.com/pgxleak/pgxleak.CollectAfterClose"),
	)
}

// leakOnPurpose runs f, which leaks a connection on purpose; TestMain's
// VerifyTestMain ignores the checkouts made inside it.
//
//go:noinline
func leakOnPurpose(f func()) { f() }

type testMain struct{ m *testing.M }

func (r testMain) Run() int {
	code := pgtest.M(r.m).Run()
	if code != 0 {
		return code
	}
	if l := longestLine.get(); len(l) >= maxLogLine {
		fmt.Fprintf(os.Stderr, "a log line of %d bytes, over the %d-byte bound:\n%s\n", len(l), maxLogLine, l)
		return 1
	} else if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "longest log line: %d bytes\n", len(l))
	}
	if err := leaktest.LeftGoroutines(); err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		return 1
	}
	return 0
}

// openTest opens a tracked pool on a fresh database of its own
// (leaktest.Open), and closes it when t ends. Reports go to the quiet
// logger unless opts set one.
func openTest(t testing.TB, opts ...pgxleak.Option) (*sql.DB, string) {
	t.Helper()
	return leaktest.Open(t, append([]pgxleak.Option{pgxleak.WithLogger(quiet)}, opts...)...)
}

// leakTx leaks a transaction that runs stmt, from a goroutine that then
// exits (leaktest.LeakTx); it returns the Tx (to end it) and the line that
// began it.
func leakTx(t *testing.T, db *sql.DB, stmt string) (*sql.Tx, site) {
	t.Helper()
	var at site
	tx := leaktest.LeakTx(t, stmt, func() (*sql.Tx, error) {
		at = lineBelow()
		return db.Begin()
	})
	return tx, at
}

// goModule copies testdata/name into a new directory, as a module of its
// own named path that requires this one (replaced by this directory, with
// its go.sum), and returns the directory and a function that runs the go
// command there, outside the workspace, failing t if it fails. ctx bounds
// the go commands.
func goModule(ctx context.Context, t *testing.T, name, path string) (dir string, goIn func(args ...string)) {
	t.Helper()
	root, err := os.Getwd() // the module root: this package's directory
	require.NoError(t, err)
	dir = t.TempDir()
	require.NoError(t, os.CopyFS(dir, os.DirFS(filepath.Join("testdata", name))))
	goMod := fmt.Sprintf("module %s\n\ngo 1.25.0\n\nrequire github.com/pgxleak/pgxleak v0.0.0\n\nreplace github.com/pgxleak/pgxleak => %s\n", path, root)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(goMod), 0o644))
	sum, err := os.ReadFile("go.sum")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644))
	goCmd, err := exec.LookPath("go") // go test puts its own toolchain first in PATH
	require.NoError(t, err)
	return dir, func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, goCmd, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOWORK=off")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "go %s: %s", strings.Join(args, " "), out)
	}
}

// quiet is a logger that drops every record, after measuring it: TestMain
// fails the run if any line the suite logged reached maxLogLine bytes.
var quiet = slog.New(slog.NewTextHandler(&longestLine, &slog.HandlerOptions{ReplaceAttr: noTime}))

// noTime drops the time from a text line: lineMeter adds slog.Default's.
func noTime(groups []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey && len(groups) == 0 {
		return slog.Attr{}
	}
	return a
}

// maxLogLine bounds a default log line (slog's text format, timestamp
// included): the stacks and the full report are in the Leak and the span.
const maxLogLine = 300

// longestLine is the longest line quiet was given.
var longestLine lineMeter

// lineMeter keeps the longest line written to it by a text handler without
// the time (one record per Write), as slog.Default would write it:
// `level=WARN msg="…"` becomes `2026/12/07 04:02:14 WARN …`, 8 bytes longer
// (and no quotes or escapes in the message, so this is an upper bound).
type lineMeter struct {
	mu      sync.Mutex
	longest string
}

func (m *lineMeter) Write(b []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if line := strings.Repeat(" ", 8) + strings.TrimSuffix(string(b), "\n"); len(line) > len(m.longest) {
		m.longest = line
	}
	return len(b), nil
}

func (m *lineMeter) get() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.longest
}

// site is a line of test code, as a report's culprit frame names it;
// lineBelow returns the line after its caller's.
type site = leaktest.Site

var lineBelow = leaktest.LineBelow

// isCulprit reports whether a leak's culprit is at.
func isCulprit(at site) func(pgxleak.Leak) bool {
	return func(l pgxleak.Leak) bool {
		return filepath.Base(l.Culprit.File) == filepath.Base(at.File) && l.Culprit.Line == at.Line
	}
}

func suspectedAt(line site) func(pgxleak.Leak) bool {
	return func(l pgxleak.Leak) bool {
		return l.Kind == pgxleak.LeakSuspected && isCulprit(line)(l)
	}
}

func resolvedAt(line site) func(pgxleak.Leak) bool {
	return func(l pgxleak.Leak) bool { return l.Kind == pgxleak.Resolved && isCulprit(line)(l) }
}

const threshold = 100 * time.Millisecond

// lockedBuffer is a bytes.Buffer that slog handlers and the monitor on
// several goroutines may write to while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// multiHandler is slog.NewMultiHandler (Go 1.26) for the tests, which must
// also build with Go 1.25: each record goes to every handler that is
// enabled for its level.
type multiHandler []slog.Handler

func newMultiHandler(hs ...slog.Handler) slog.Handler { return multiHandler(hs) }

func (m multiHandler) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range m {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (m multiHandler) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range m {
		if h.Enabled(ctx, r.Level) {
			errs = append(errs, h.Handle(ctx, r.Clone()))
		}
	}
	return errors.Join(errs...)
}

func (m multiHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(multiHandler, len(m))
	for i, h := range m {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (m multiHandler) WithGroup(name string) slog.Handler {
	out := make(multiHandler, len(m))
	for i, h := range m {
		out[i] = h.WithGroup(name)
	}
	return out
}

// stats, checkouts and stackString are internal/leaktest's, shared with
// the integration module.
var (
	stats       = leaktest.Stats
	checkouts   = leaktest.Checkouts
	stackString = leaktest.StackString
)
