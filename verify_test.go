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

	"github.com/pgxleak/pgxleak"
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
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeT{}
	pgxleak.VerifyNone(ft, db, pgxleak.GracePeriod(50*time.Millisecond))
	if len(ft.errors) != 1 || !strings.Contains(ft.errors[0], line.String()) ||
		!strings.Contains(ft.errors[0], "1 connection still checked out") || !strings.Contains(ft.errors[0], "TestVerifyNone") {
		t.Fatalf("VerifyNone reported %q", ft.errors)
	}
	ignoring := &fakeT{}
	pgxleak.VerifyNone(ignoring, db, pgxleak.GracePeriod(0), pgxleak.IgnoreFunction("github.com/pgxleak/pgxleak_test.TestVerifyNone"))
	if len(ignoring.errors) != 0 {
		t.Fatalf("IgnoreFunction did not ignore: %q", ignoring.errors)
	}
	// A connection on its way back within the grace period is not a leak.
	go func() {
		time.Sleep(50 * time.Millisecond) // the holder finishes a little later
		c.Close()
	}()
	clean := &fakeT{}
	pgxleak.VerifyNone(clean, db, pgxleak.GracePeriod(5*time.Second))
	if len(clean.errors) != 0 {
		t.Fatalf("VerifyNone after return: %q", clean.errors)
	}
	notTracked := &fakeT{}
	plain, _ := sql.Open("pgx", "postgres://x@127.0.0.1/x")
	defer plain.Close()
	pgxleak.VerifyNone(notTracked, plain)
	if len(notTracked.errors) != 1 || !strings.Contains(notTracked.errors[0], "not opened by pgxleak") {
		t.Fatalf("VerifyNone on a plain *sql.DB: %q", notTracked.errors)
	}
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
		if err != nil {
			t.Fatal(err)
		}
		_ = rows
	})
	if len(ft.errors) != 0 {
		t.Fatalf("VerifyNone: %q", ft.errors)
	}
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

	db, err := pgxleak.OpenDB(&fakeConnector{}, pgxleak.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
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
		if exitCode != tc.want || strings.Contains(stderr.String(), "still checked out") != tc.reported {
			t.Errorf("%s: exit %d, stderr %q", tc.name, exitCode, stderr.String())
		}
		if tc.reported && !strings.Contains(stderr.String(), "verify_test.go") {
			t.Errorf("%s: the report does not name the culprit: %s", tc.name, stderr.String())
		}
	}
	c.Close()
	exitCode = -1
	pgxleak.VerifyTestMain(fakeM{0}, pgxleak.GracePeriod(0))
	if exitCode != 0 {
		t.Fatalf("exit %d after the connection came back; stderr %q", exitCode, stderr.String())
	}
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
	if len(ft.errors) != 1 || !strings.Contains(ft.errors[0], "not sampled") ||
		!strings.Contains(ft.errors[0], "WithStackSampling(1)") || !strings.Contains(ft.errors[0], "IgnoreFunction") {
		t.Fatalf("VerifyNone reported %q", ft.errors)
	}
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

	db, err := pgxleak.OpenDB(&fakeConnector{}, pgxleak.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	c, err := db.Conn(context.Background()) // the leak
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	exitCode = -1
	pgxleak.VerifyTestMain(fakeM{0}, pgxleak.GracePeriod(0))
	if exitCode != 1 || !strings.Contains(stderr.String(), "verify_test.go") {
		t.Errorf("pool closed with a connection out: exit %d, stderr %q; want 1, naming the line", exitCode, stderr.String())
	}
	c.Close()
	exitCode, stderr = -1, bytes.Buffer{}
	pgxleak.VerifyTestMain(fakeM{0}, pgxleak.GracePeriod(0))
	if exitCode != 0 {
		t.Errorf("exit %d after the connection came back; stderr %q", exitCode, stderr.String())
	}
}
