// Shared helpers for the live page's tests: pools on real PostgreSQL
// databases and the line a checkout is made at, internal/leaktest's.
package livepage_test

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestMain checks, after the tests passed, that no goroutine leaked: every
// page's sampler stops within one sampling interval (at most a second
// here) of its pool's Close.
func TestMain(m *testing.M) {
	code := pgtest.M(m).Run()
	if code == 0 {
		// goleak retries for about a second; a sampler may sleep as long.
		deadline := time.Now().Add(3 * time.Second)
		err := goleak.Find()
		for err != nil && time.Now().Before(deadline) {
			err = goleak.Find()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// openTest opens a tracked pool on a fresh database of its own, and closes
// it when t ends. Reports go to a quiet logger unless opts set one.
var openTest = leaktest.Open

// quiet is a logger that drops every record.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// site is a line of code; lineBelow returns the line after its caller's.
type site = leaktest.Site

var lineBelow = leaktest.LineBelow
