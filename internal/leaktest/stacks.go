package leaktest

import (
	"database/sql"
	"database/sql/driver"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/stack"
	"github.com/pgxleak/pgxleak/internal/testdriver"
)

// HoldPath is one call path that checks a connection out: Hold leaves one
// connection checked out of db and returns a function that gives it back.
type HoldPath struct {
	Name string
	Want string // a function that must be in the checkout's stack
	Hold func(t *testing.T, db *sql.DB) (release func())
}

// CheckFramePointerStacks takes the same checkout twice on each path, once
// with frame-pointer unwinding and once with runtime.Callers, and requires
// the reported stacks to be identical, frame for frame, and to reach the
// path's Want and this harness: over the in-memory driver and over pgx
// against the real server. It skips if frame-pointer unwinding is off.
func CheckFramePointerStacks(t *testing.T, paths []HoldPath) {
	if !stack.FramePointers() {
		t.Skipf("frame-pointer unwinding is off on %s (PGXLEAK_FPUNWIND=0, build tag, or architecture)", runtime.GOARCH)
	}
	backends := []struct {
		name      string
		connector func(t *testing.T) driver.Connector
	}{
		{"memdriver", func(*testing.T) driver.Connector { return &testdriver.Connector{} }},
		{"postgres", func(t *testing.T) driver.Connector {
			cfg, err := pgx.ParseConfig(pgtest.AdminDSN(t))
			require.NoError(t, err)
			return stdlib.GetConnector(*cfg)
		}},
	}
	for _, be := range backends {
		for _, path := range paths {
			t.Run(be.name+"/"+path.Name, func(t *testing.T) {
				var got [2][]pgxleak.Frame
				for i, fp := range []bool{true, false} {
					got[i] = HeldStack(t, be.connector(t), path, fp)
				}
				t.Logf("%d frames:\n%s", len(got[0]), StackString(got[0]))
				require.Equal(t, got[1], got[0], "frame pointers must give runtime.Callers' stack")
				require.True(t, hasFrame(got[0], path.Want) && hasFrame(got[0], "leaktest.CheckFramePointerStacks"),
					"expected %s and this harness in the stack:\n%s", path.Want, StackString(got[0]))
			})
		}
	}
}

// HeldStack opens a pool of one connection over c, checks that connection
// out through path with frame-pointer unwinding on or off, and returns the
// stack pgxleak reports for it. The connection has been used once before,
// so the checkout goes through ResetSession in both runs.
func HeldStack(t *testing.T, c driver.Connector, path HoldPath, fp bool) []pgxleak.Frame {
	t.Helper()
	db, err := pgxleak.OpenDB(c, pgxleak.WithMaxOpenConns(1), pgxleak.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Ping())
	was := stack.SetFramePointers(fp)
	release := path.Hold(t, db)
	stack.SetFramePointers(was)
	defer release()
	cos := Checkouts(t, db)
	require.Len(t, cos, 1)
	return cos[0].Stack
}

func hasFrame(fs []pgxleak.Frame, fn string) bool {
	for _, f := range fs {
		if strings.Contains(f.Function, fn) {
			return true
		}
	}
	return false
}
