package pgxleak_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// fakeT records what VerifyNone reports.
type fakeT struct {
	mu     sync.Mutex
	errors []string
}

func (f *fakeT) Error(args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errors = append(f.errors, fmt.Sprint(args...))
}

func TestVerifyNone(t *testing.T) {
	db, _ := openTest(t)
	line := lineBelow()
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	ft := &fakeT{}
	pgxleak.VerifyNone(ft, db, pgxleak.GracePeriod(50*time.Millisecond))
	require.Len(t, ft.errors, 1, "VerifyNone's reports")
	require.Contains(t, ft.errors[0], line.String())
	require.Contains(t, ft.errors[0], "1 connection(s) still checked out")
	require.Contains(t, ft.errors[0], "TestVerifyNone")
	ignoring := &fakeT{}
	pgxleak.VerifyNone(ignoring, db, pgxleak.GracePeriod(0), pgxleak.IgnoreFunction("github.com/pgxleak/pgxleak_test.TestVerifyNone"))
	require.Empty(t, ignoring.errors, "IgnoreFunction did not ignore")
	// A connection on its way back within the grace period is not a leak.
	go func() {
		time.Sleep(50 * time.Millisecond) // the holder finishes a little later
		c.Close()
	}()
	clean := &fakeT{}
	pgxleak.VerifyNone(clean, db, pgxleak.GracePeriod(5*time.Second))
	require.Empty(t, clean.errors, "VerifyNone after the connection came back within the grace period")
	notTracked := &fakeT{}
	plain, _ := sql.Open("pgx", "postgres://x@127.0.0.1/x")
	defer plain.Close()
	pgxleak.VerifyNone(notTracked, plain)
	require.Len(t, notTracked.errors, 1, "VerifyNone on a plain *sql.DB")
	assert.Contains(t, notTracked.errors[0], "not opened by pgxleak")
}

// TestVerifyNoneAfterTestContext: rows on t.Context() are closed by
// database/sql asynchronously once the test ends; VerifyNone in Cleanup
// waits for that instead of failing.
func TestVerifyNoneAfterTestContext(t *testing.T) {
	db, _ := openTest(t)
	ft := &fakeT{}
	t.Run("leaves rows open on t.Context()", func(t *testing.T) {
		t.Cleanup(func() { pgxleak.VerifyNone(ft, db) })
		rows, err := db.QueryContext(t.Context(), "SELECT generate_series(1, 10)")
		require.NoError(t, err)
		_ = rows
	})
	assert.Empty(t, ft.errors, "VerifyNone")
}

type fakeM struct{ code int }

func (m fakeM) Run() int { return m.code }

// TestVerifyTestMain runs VerifyTestMain with the exit and stderr seams
// swapped, around a pool with a connection still out.
func TestVerifyTestMain(t *testing.T) {
	var exitCode int
	var stderr bytes.Buffer
	defer func(exit func(int), w io.Writer) { *pgxleak.OSExit, *pgxleak.OSStderr = exit, w }(*pgxleak.OSExit, *pgxleak.OSStderr)
	*pgxleak.OSExit = func(code int) { exitCode = code }
	*pgxleak.OSStderr = &stderr
	pgxleak.IsolateRegistry(t)

	db, err := pgxleak.OpenDB(&testdriver.Connector{}, pgxleak.WithLogger(quiet))
	require.NoError(t, err)
	defer db.Close()
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	for _, tc := range []struct {
		name     string
		runCode  int
		want     int
		reported bool
	}{
		{"tests failed: exit with their code, no check", 3, 3, false},
		{"tests passed, connection out", 0, 1, true},
	} {
		exitCode, stderr = -1, bytes.Buffer{}
		pgxleak.VerifyTestMain(fakeM{tc.runCode}, pgxleak.GracePeriod(0))
		assert.Equal(t, tc.want, exitCode, "%s: exit code; stderr %q", tc.name, stderr.String())
		assert.Equal(t, tc.reported, strings.Contains(stderr.String(), "still checked out"), "%s: reported; stderr %q", tc.name, stderr.String())
		if tc.reported {
			assert.Contains(t, stderr.String(), "verify_test.go", "%s: the report names the culprit", tc.name)
		}
	}
	c.Close()
	exitCode = -1
	pgxleak.VerifyTestMain(fakeM{0}, pgxleak.GracePeriod(0))
	assert.Zero(t, exitCode, "exit code after the connection came back; stderr %q", stderr.String())
}

// TestVerifyNoneUnsampledCheckout: IgnoreFunction cannot match a checkout
// whose stack was not sampled; the failure says so and what to do.
func TestVerifyNoneUnsampledCheckout(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithStackSampling(2), pgxleak.WithMaxOpenConns(1))
	holdA(t, db).Close() // sampled
	c := holdA(t, db)    // not sampled
	defer c.Close()
	ft := &fakeT{}
	pgxleak.VerifyNone(ft, db, pgxleak.GracePeriod(0), pgxleak.IgnoreFunction("github.com/pgxleak/pgxleak_test.holdA"))
	require.Len(t, ft.errors, 1, "VerifyNone's reports")
	assert.Contains(t, ft.errors[0], "not sampled")
	assert.Contains(t, ft.errors[0], "WithStackSampling(1)")
	assert.Contains(t, ft.errors[0], "IgnoreFunction")
}

// TestVerifyTestMainClosedPool: the natural setup, a pool closed in a
// test's Cleanup while a connection is still out, fails the run and names
// the line; once the connection comes back, the run passes.
func TestVerifyTestMainClosedPool(t *testing.T) {
	var exitCode int
	var stderr bytes.Buffer
	defer func(exit func(int), w io.Writer) { *pgxleak.OSExit, *pgxleak.OSStderr = exit, w }(*pgxleak.OSExit, *pgxleak.OSStderr)
	*pgxleak.OSExit = func(code int) { exitCode = code }
	*pgxleak.OSStderr = &stderr
	pgxleak.IsolateRegistry(t)

	db, err := pgxleak.OpenDB(&testdriver.Connector{}, pgxleak.WithLogger(quiet))
	require.NoError(t, err)
	c, err := db.Conn(context.Background()) // the leak
	require.NoError(t, err)
	require.NoError(t, db.Close())
	exitCode = -1
	pgxleak.VerifyTestMain(fakeM{0}, pgxleak.GracePeriod(0))
	assert.Equal(t, 1, exitCode, "a pool closed with a connection out fails the run")
	assert.Contains(t, stderr.String(), "verify_test.go", "the report names the line")
	c.Close()
	exitCode, stderr = -1, bytes.Buffer{}
	pgxleak.VerifyTestMain(fakeM{0}, pgxleak.GracePeriod(0))
	assert.Zero(t, exitCode, "exit code after the connection came back; stderr %q", stderr.String())
}
