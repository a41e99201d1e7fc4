package pgxleak_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgxleak/pgxleak"
)

func TestCheckoutsFields(t *testing.T) {
	db, _ := openTest(t)
	ctx := context.Background()
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var pid int
	if err := c.QueryRowContext(ctx, "SELECT pg_backend_pid() WHERE $1::text <> ''", "argument-value").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	cs := checkouts(t, db)
	if len(cs) != 1 {
		t.Fatalf("Checkouts = %v", cs)
	}
	co := cs[0]
	if int(co.BackendPID) != pid || co.TxStatus != "idle" || co.Suspected || co.Held <= 0 || time.Since(co.CheckedOutAt) < co.Held-time.Millisecond {
		t.Fatalf("checkout %+v (pid %d)", co, pid)
	}
	if co.LastStatement != "SELECT pg_backend_pid() WHERE $1::text <> ''" || strings.Contains(co.String(), "argument-value") {
		t.Fatalf("statement %q: want the text without arguments", co.LastStatement)
	}
	if cs, err := pgxleak.Checkouts(nil); cs != nil || !errors.Is(err, pgxleak.ErrNotTracked) {
		t.Fatalf("Checkouts(nil) = %v, %v; want nil, ErrNotTracked", cs, err)
	}
	if _, err := pgxleak.Stats(nil); !errors.Is(err, pgxleak.ErrNotTracked) {
		t.Fatalf("Stats(nil): %v, want ErrNotTracked", err)
	}
}
