package pgxleak_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
)

// FuzzLeakRendering renders reports, checkouts and LeakErrors built from
// arbitrary values: no panic, and each rendering carries the parts it
// promises (culprit, repeats, pool, quoted statement, stack).
func FuzzLeakRendering(f *testing.F) {
	f.Add(1, "github.com/acme/app.(*Server).getUser", "/src/app/handler.go", 42, "SELECT * FROM users WHERE id = $1", "db:5432/app", int64(7*time.Second), uint32(81234), 0, false, uint8(3))
	f.Add(2, "", "", 0, "", "", int64(0), uint32(0), 3, false, uint8(0))
	f.Add(3, "main.main", "main.go", -1, "\"quoted\"\n\ttab", "p", int64(-1), uint32(1), -1, true, uint8(255))
	f.Add(99, "a/b.c", "/x/y/z.go", 1<<40, "SELECT '%s %d %v'", "%v", int64(1)<<62, uint32(1)<<31, 1<<30, true, uint8(1))
	f.Fuzz(func(t *testing.T, kind int, fn, file string, line int, stmt, pool string, held int64, pid uint32, repeats int, resolved bool, depth uint8) {
		culprit := pgxleak.Frame{Function: fn, File: file, Line: line}
		stack := make([]pgxleak.Frame, 0, int(depth)%16+1)
		for i := range cap(stack) - 1 {
			stack = append(stack, pgxleak.Frame{Function: "database/sql.f", File: "/sql.go", Line: i})
		}
		stack = append(stack, culprit)
		co := pgxleak.Checkout{Pool: pool, Culprit: culprit, Stack: stack, CheckedOutAt: time.Unix(0, held),
			Held: time.Duration(held), BackendPID: pid, LastStatement: stmt, TxStatus: "in transaction"}
		if resolved {
			kind = int(pgxleak.Resolved)
		}
		l := pgxleak.Leak{Kind: pgxleak.Kind(kind), Checkout: co, Repeats: repeats}

		loc := culprit.String()
		require.NotEmpty(t, loc, "Frame.String")
		s := l.String()
		require.True(t, strings.HasPrefix(s, "pgxleak: "), "Leak.String() = %q", s)
		require.Contains(t, s, loc, "Leak.String() names the culprit")
		require.Equal(t, repeats > 0, strings.Contains(s, fmt.Sprintf("(+%d more like it)", repeats)), "Leak.String() = %q with %d repeats", s, repeats)
		require.Contains(t, co.String(), loc, "Checkout.String() names the culprit")
		st := stackString(co.Stack)
		var wantStack strings.Builder
		for _, fr := range stack {
			fmt.Fprintf(&wantStack, "%s()\n\t%s:%d\n", fr.Function, fr.File, fr.Line)
		}
		require.Equal(t, wantStack.String(), st, "the stack's rendering")
		want := map[int]string{1: "suspected", 2: "garbage_collected", 3: "still_out", 4: "resolved", 5: "deadlock", 6: "exhausted"}[kind]
		if want == "" {
			want = fmt.Sprintf("Kind(%d)", kind)
		}
		require.Equal(t, want, l.Kind.String(), "Kind(%d).String()", kind)
		le := &pgxleak.LeakError{Checkouts: []pgxleak.Checkout{co, co}}
		e := le.Error()
		// A summary: a line per checkout, its stack left on the value.
		require.True(t, strings.HasPrefix(e, "pgxleak: 2 connections still checked out\n  "), "LeakError.Error() = %q", e)
		require.GreaterOrEqual(t, strings.Count(e, loc), 2, "LeakError.Error() names both culprits: %q", e)
		if len(stack) > 1 {
			require.NotContains(t, e, "database/sql.f()", "LeakError.Error() leaves the stack on the value")
		}
		if !strings.Contains(fn+file, "\n") {
			require.Len(t, strings.Split(e, "\n"), 3, "LeakError.Error() is one line per connection: %q", e)
		}
	})
}

// reportAt matches first reports of kind whose culprit is at.
func reportAt(kind pgxleak.Kind, at site) func(pgxleak.Leak) bool {
	return func(l pgxleak.Leak) bool { return l.Kind == kind && isCulprit(at)(l) }
}

// logTo returns a text logger writing to b.
func logTo(b *lockedBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

//go:noinline
func holdA(t *testing.T, db *sql.DB) *sql.Conn {
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	return c
}

//go:noinline
func holdB(t *testing.T, db *sql.DB) *sql.Conn {
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	return c
}
