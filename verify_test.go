package pgxleak_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
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
	pgxleak.VerifyNone(ft, db, pgxleak.WithGracePeriod(50*time.Millisecond))
	require.Len(t, ft.errors, 1, "VerifyNone's reports")
	require.Contains(t, ft.errors[0], line.String())
	require.Contains(t, ft.errors[0], "1 connection still checked out")
	require.Contains(t, ft.errors[0], "TestVerifyNone")
	ignoring := &fakeT{}
	pgxleak.VerifyNone(ignoring, db, pgxleak.WithGracePeriod(0), pgxleak.WithIgnoredFunction("github.com/pgxleak/pgxleak_test.TestVerifyNone"))
	require.Empty(t, ignoring.errors, "WithIgnoredFunction did not ignore")
	// A connection on its way back within the grace period is not a leak.
	go func() {
		time.Sleep(50 * time.Millisecond) // the holder finishes a little later
		c.Close()
	}()
	clean := &fakeT{}
	pgxleak.VerifyNone(clean, db, pgxleak.WithGracePeriod(5*time.Second))
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
		pgxleak.VerifyTestMain(fakeM{tc.runCode}, pgxleak.WithGracePeriod(0))
		assert.Equal(t, tc.want, exitCode, "%s: exit code; stderr %q", tc.name, stderr.String())
		assert.Equal(t, tc.reported, strings.Contains(stderr.String(), "still checked out"), "%s: reported; stderr %q", tc.name, stderr.String())
		if tc.reported {
			assert.Contains(t, stderr.String(), "verify_test.go", "%s: the report names the culprit", tc.name)
		}
	}
	c.Close()
	exitCode = -1
	pgxleak.VerifyTestMain(fakeM{0}, pgxleak.WithGracePeriod(0))
	assert.Zero(t, exitCode, "exit code after the connection came back; stderr %q", stderr.String())
}

// TestVerifyNoneUnsampledCheckout: WithIgnoredFunction cannot match a checkout
// whose stack was not sampled; the failure says so and what to do.
func TestVerifyNoneUnsampledCheckout(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithStackSampling(2), pgxleak.WithMaxOpenConns(1))
	holdA(t, db).Close() // sampled
	c := holdA(t, db)    // not sampled
	defer c.Close()
	ft := &fakeT{}
	pgxleak.VerifyNone(ft, db, pgxleak.WithGracePeriod(0), pgxleak.WithIgnoredFunction("github.com/pgxleak/pgxleak_test.holdA"))
	require.Len(t, ft.errors, 1, "VerifyNone's reports")
	assert.Contains(t, ft.errors[0], "not sampled")
	assert.Contains(t, ft.errors[0], "WithStackSampling(1)")
	assert.Contains(t, ft.errors[0], "WithIgnoredFunction")
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
	pgxleak.VerifyTestMain(fakeM{0}, pgxleak.WithGracePeriod(0))
	assert.Equal(t, 1, exitCode, "a pool closed with a connection out fails the run")
	assert.Contains(t, stderr.String(), "verify_test.go", "the report names the line")
	c.Close()
	exitCode, stderr = -1, bytes.Buffer{}
	pgxleak.VerifyTestMain(fakeM{0}, pgxleak.WithGracePeriod(0))
	assert.Zero(t, exitCode, "exit code after the connection came back; stderr %q", stderr.String())
}

// dropConn checks a connection out of db and drops it: it never comes back.
//
//go:noinline
func dropConn(t *testing.T, db *sql.DB) {
	_, err := db.Conn(context.Background())
	require.NoError(t, err)
}

// TestVerifyTestMainCollectedPool: a pool closed with a connection out
// that its holder then dropped is collected, pool and connection, and the
// run still fails, naming the line.
func TestVerifyTestMainCollectedPool(t *testing.T) {
	var exitCode int
	var stderr bytes.Buffer
	defer func(exit func(int), w io.Writer) { *pgxleak.OSExit, *pgxleak.OSStderr = exit, w }(*pgxleak.OSExit, *pgxleak.OSStderr)
	*pgxleak.OSExit = func(code int) { exitCode = code }
	*pgxleak.OSStderr = &stderr
	pgxleak.IsolateRegistry(t)

	db, err := pgxleak.OpenDB(&testdriver.Connector{}, pgxleak.WithLogger(quiet))
	require.NoError(t, err)
	dropConn(t, db)
	require.NoError(t, db.Close())
	collected := weak.Make(db)
	db = nil
	pgtest.WaitFor(t, 5*time.Second, "the pool collected", func() bool {
		runtime.GC()
		return collected.Value() == nil
	})
	pgxleak.VerifyTestMain(fakeM{0}, pgxleak.WithGracePeriod(0))
	assert.Equal(t, 1, exitCode)
	assert.Contains(t, stderr.String(), "pgxleak_test.dropConn")
}

// listenOnPurpose takes a connection and LISTENs on it: in a real program
// it would wait there for notifications for hours. The pools of
// TestHeldOnPurpose are opened with WithIgnoredFunction naming it.
//
//go:noinline
func listenOnPurpose(t *testing.T, db *sql.DB) *sql.Conn {
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	_, err = c.ExecContext(context.Background(), "LISTEN jobs")
	require.NoError(t, err)
	return c
}

// takeOtherConn is an ordinary checkout.
//
//go:noinline
func takeOtherConn(t *testing.T, db *sql.DB) *sql.Conn {
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.PingContext(context.Background()))
	return c
}

// takeAgain is an ordinary checkout too, with a culprit of its own (the
// same culprit's reports are de-duplicated).
//
//go:noinline
func takeAgain(t *testing.T, db *sql.DB) *sql.Conn {
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.PingContext(context.Background()))
	return c
}

// onPurpose returns the checkout of db held on purpose.
func onPurpose(t *testing.T, db *sql.DB) pgxleak.Checkout {
	t.Helper()
	cs, err := pgxleak.Checkouts(db)
	require.NoError(t, err)
	for _, c := range cs {
		if c.OnPurpose != "" {
			return c
		}
	}
	require.FailNow(t, "no checkout held on purpose", "%v", cs)
	return pgxleak.Checkout{}
}

// TestHeldOnPurpose: a LISTEN connection taken in a function given to
// WithIgnoredFunction at Open is not reported for three times the leak
// threshold while an ordinary checkout is; it is listed, counted in use,
// left out by Find and VerifyNone, and named as held on purpose by Drain.
// Taken again elsewhere, its connection is reported as usual.
func TestHeldOnPurpose(t *testing.T) {
	const threshold = 50 * time.Millisecond
	const listen = "github.com/pgxleak/pgxleak_test.listenOnPurpose"
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, rec.Option(), pgxleak.WithLeakThreshold(threshold), pgxleak.WithMaxOpenConns(2),
		pgxleak.WithIgnoredFunction(listen))

	l := listenOnPurpose(t, db)
	pgtest.WaitFor(t, 10*time.Second, "the LISTEN connection held twice the threshold", func() bool {
		return onPurpose(t, db).Held >= 2*threshold
	})
	// An ordinary checkout, reported once held past the threshold: by
	// then the LISTEN connection was held three times the threshold, and
	// scanned.
	other := takeOtherConn(t, db)
	rec.Wait(t, 10*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakSuspected })

	held := onPurpose(t, db)
	assert.Equal(t, listen, held.OnPurpose)
	assert.GreaterOrEqual(t, held.Held, 3*threshold)
	assert.Contains(t, held.String(), "held on purpose ("+listen+")")
	assert.False(t, held.Suspected)
	for _, r := range rec.All() {
		assert.NotEqual(t, listen, r.Culprit.Function, "reported: %v", r)
	}
	in, err := pgxleak.Inspect(context.Background(), db)
	require.NoError(t, err)
	assert.True(t, slices.ContainsFunc(in.Checkouts, func(c pgxleak.Checkout) bool { return c.OnPurpose == listen }), "Inspect: %v", in.Checkouts)
	st, err := pgxleak.Stats(db)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), st.Suspected, "only the ordinary checkout counts as a leak")
	assert.Equal(t, 2, st.CheckedOut, "held on purpose still counts toward the pool's use")

	var le *pgxleak.LeakError
	require.ErrorAs(t, pgxleak.Find(db, pgxleak.WithGracePeriod(0)), &le)
	require.Len(t, le.Checkouts, 1, "Find lists the ordinary checkout only")
	assert.Equal(t, "github.com/pgxleak/pgxleak_test.takeOtherConn", le.Checkouts[0].Culprit.Function)
	require.NoError(t, other.Close())
	pgxleak.VerifyNone(t, db, pgxleak.WithGracePeriod(0))

	// Back to the pool, the connection is tracked as usual again.
	require.NoError(t, l.Close())
	a, b := takeAgain(t, db), takeAgain(t, db) // the pool's two connections, the LISTEN one among them
	pgtest.WaitFor(t, 10*time.Second, "the LISTEN connection, taken again, reported as a suspected leak", func() bool {
		cs, err := pgxleak.Checkouts(db)
		require.NoError(t, err)
		return slices.ContainsFunc(cs, func(c pgxleak.Checkout) bool {
			return c.BackendPID == held.BackendPID && c.Suspected && c.OnPurpose == "" &&
				c.Culprit.Function == "github.com/pgxleak/pgxleak_test.takeAgain"
		})
	})
	pgtest.WaitFor(t, 10*time.Second, "both counted as suspected leaks", func() bool {
		st, err := pgxleak.Stats(db)
		return err == nil && st.Suspected == 3
	})
	require.NoError(t, a.Close())
	require.NoError(t, b.Close())

	// Drain waits for it, and names it as held on purpose, not as a leak.
	l = listenOnPurpose(t, db)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = pgxleak.Drain(ctx, db)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "Drain waited for it")
	require.ErrorAs(t, err, &le)
	require.Len(t, le.Checkouts, 1)
	assert.Equal(t, listen, le.Checkouts[0].OnPurpose)
	assert.Contains(t, err.Error(), "held on purpose ("+listen+")")
	st, err = pgxleak.Stats(db)
	require.NoError(t, err)
	assert.Zero(t, st.StillOut, "not reported as still out")
}
