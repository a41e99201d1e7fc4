package pgxleak_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

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
		if loc == "" {
			t.Fatal("Frame.String is empty")
		}
		s := l.String()
		if !strings.HasPrefix(s, "pgxleak: ") || !strings.Contains(s, loc) {
			t.Fatalf("Leak.String() = %q, want the culprit %q", s, loc)
		}
		if more := fmt.Sprintf("(+%d more like it)", repeats); (repeats > 0) != strings.Contains(s, more) {
			t.Fatalf("Leak.String() = %q with %d repeats", s, repeats)
		}
		if !strings.Contains(co.String(), loc) {
			t.Fatalf("Checkout.String() = %q", co.String())
		}
		st := stackString(co.Stack)
		var wantStack strings.Builder
		for _, fr := range stack {
			fmt.Fprintf(&wantStack, "%s()\n\t%s:%d\n", fr.Function, fr.File, fr.Line)
		}
		if st != wantStack.String() {
			t.Fatalf("the stack renders as %q, want %q", st, wantStack.String())
		}
		want := map[int]string{1: "suspected", 2: "garbage_collected", 3: "still_out", 4: "resolved", 5: "deadlock", 6: "exhausted"}[kind]
		if want == "" {
			want = fmt.Sprintf("Kind(%d)", kind)
		}
		if got := l.Kind.String(); got != want {
			t.Fatalf("Kind(%d).String() = %q, want %q", kind, got, want)
		}
		le := &pgxleak.LeakError{Checkouts: []pgxleak.Checkout{co, co}}
		e := le.Error()
		// A summary: a line per checkout, its stack left on the value.
		if !strings.HasPrefix(e, "pgxleak: 2 connections still checked out\n  ") || strings.Count(e, loc) < 2 ||
			(len(stack) > 1 && strings.Contains(e, "database/sql.f()")) {
			t.Fatalf("LeakError.Error() = %q", e)
		}
		if lines := strings.Split(e, "\n"); !strings.Contains(fn+file, "\n") && len(lines) != 3 {
			t.Fatalf("LeakError.Error() has %d lines, want 3: %q", len(lines), e)
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
	if err != nil {
		t.Fatal(err)
	}
	return c
}

//go:noinline
func holdB(t *testing.T, db *sql.DB) *sql.Conn {
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}
