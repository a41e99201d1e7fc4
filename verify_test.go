package pgxleak_test

import (
	"context"
	"database/sql"
	"fmt"
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
		!strings.Contains(ft.errors[0], "1 connection(s) still checked out") || !strings.Contains(ft.errors[0], "TestVerifyNone") {
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
