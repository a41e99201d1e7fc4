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
	"github.com/pgxleak/pgxleak/internal/pgtest"
)

// TestReportsDeduplicated: a leak in a loop is reported once per culprit
// and counted, not logged a hundred times.
func TestReportsDeduplicated(t *testing.T) {
	rec := newLeakRecorder()
	var buf lockedBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	db, _ := openTest(t, pgxleak.WithMaxOpenConns(10), pgxleak.WithLeakThreshold(threshold), rec.option(), pgxleak.WithLogger(logger))
	var conns []*sql.Conn
	var line site
	for range 10 {
		line = lineBelow()
		c, err := db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	pgtest.WaitFor(t, 5*time.Second, "all ten to be suspected", func() bool { return pgxleak.Stats(db).Suspected == 10 })
	for _, c := range conns {
		c.Close()
	}
	pgtest.WaitFor(t, 5*time.Second, "all ten to resolve", func() bool { return pgxleak.Stats(db).Resolved == 10 })
	rec.wait(t, 5*time.Second, resolvedAt(line))
	var suspected, resolved int
	for _, l := range rec.all() {
		if !isCulprit(line)(l) {
			t.Fatalf("culprit %s, want %s", l.Culprit, line)
		}
		if l.Resolved {
			resolved++
		} else {
			suspected++
		}
	}
	if suspected != 1 || resolved != 1 {
		t.Fatalf("%d suspected and %d resolved reports delivered, want 1 each", suspected, resolved)
	}
	if n := strings.Count(buf.String(), `msg="pgxleak: suspected leak:`); n != 1 {
		t.Fatalf("%d log lines for one culprit:\n%s", n, buf.String())
	}
}

func TestLogReportLeadsWithCulprit(t *testing.T) {
	var buf lockedBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	rec := newLeakRecorder()
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), pgxleak.WithLogger(logger), rec.option())
	line := lineBelow()
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rec.wait(t, 5*time.Second, suspectedAt(line))
	want := fmt.Sprintf(`level=WARN msg="pgxleak: suspected leak: connection checked out at %s (pgxleak_test.TestLogReportLeadsWithCulprit), held `, line.short())
	if !strings.Contains(buf.String(), want) || !strings.Contains(buf.String(), "kind=suspected") || !strings.Contains(buf.String(), "stack=") {
		t.Fatalf("log:\n%s\nwant it to contain:\n%s", buf.String(), want)
	}
}

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
		l := pgxleak.Leak{Kind: pgxleak.LeakKind(kind), Checkout: co, Resolved: resolved, Repeats: repeats}

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
		st := co.StackString()
		var wantStack strings.Builder
		for _, fr := range stack {
			fmt.Fprintf(&wantStack, "%s()\n\t%s:%d\n", fr.Function, fr.File, fr.Line)
		}
		if st != wantStack.String() {
			t.Fatalf("StackString() = %q, want %q", st, wantStack.String())
		}
		want := map[int]string{1: "suspected", 2: "garbage_collected", 3: "still_out"}[kind]
		if want == "" {
			want = fmt.Sprintf("LeakKind(%d)", kind)
		}
		if got := l.Kind.String(); got != want {
			t.Fatalf("LeakKind(%d).String() = %q, want %q", kind, got, want)
		}
		le := &pgxleak.LeakError{Checkouts: []pgxleak.Checkout{co, co}}
		e := le.Error()
		if !strings.HasPrefix(e, "pgxleak: 2 connection(s) still checked out") || strings.Count(e, loc) < 2 ||
			!strings.Contains(e, "[pool "+pool) || !strings.Contains(e, st) {
			t.Fatalf("LeakError.Error() = %q", e)
		}
		if stmt != "" && !strings.Contains(e, fmt.Sprintf("last statement %q", stmt)) {
			t.Fatalf("LeakError.Error() = %q does not quote the statement", e)
		}
	})
}
