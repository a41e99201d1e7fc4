package pgxleak_test

import (
	"strings"
	"testing"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/stack"
)

// FuzzCulprit checks the culprit policy against its definition on arbitrary
// stacks (function names separated by newlines) and extra prefixes
// (separated by commas).
func FuzzCulprit(f *testing.F) {
	f.Add("runtime.goexit\ndatabase/sql.(*DB).conn\ngithub.com/acme/app.handler\nmain.main", "")
	f.Add("github.com/acme/dbutil.Get\ngithub.com/acme/app.handler", "github.com/acme/dbutil.")
	f.Add("github.com/jackc/pgx/v5.(*Conn).Query\ngorm.io/gorm.(*DB).Find", ",")
	f.Add("", "x")
	f.Add("main.f.gowrap12\nmain.g-fm\nruntime.call16\nruntime.debugCall8192\nmain.h.deferwrap\n", "main.")
	f.Fuzz(func(t *testing.T, names, extras string) {
		var frames []stack.Frame
		for i, fn := range strings.Split(names, "\n") {
			frames = append(frames, stack.Frame{Function: fn, File: "/f.go", Line: i})
		}
		extra := strings.Split(extras, ",")
		i := pgxleak.CulpritIndex(frames, extra)
		want := -1
		for j, fr := range frames {
			lib := false
			for _, p := range append(append([]string(nil), pgxleak.LibraryPrefixes...), extra...) {
				if p != "" && strings.HasPrefix(fr.Function, p) {
					lib = true
				}
			}
			if !lib {
				want = j
				break
			}
		}
		if i != want {
			t.Fatalf("Culprit = %d, want %d (frames %q, extra %q)", i, want, names, extras)
		}
	})
}
