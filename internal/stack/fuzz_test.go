package stack

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzFrameRendering checks Location, ShortFile, ShortFunction and Format
// on arbitrary frames: no panic, and each renders exactly the parts it
// promises.
func FuzzFrameRendering(f *testing.F) {
	f.Add("github.com/acme/app.(*Server).getUser", "/src/app/handler.go", 42)
	f.Add("main.main", "/main.go", 1)
	f.Add("", "", 0)
	f.Add("noslash", "noslash.go", -1)
	f.Add("a/b/c.d/e.f", "//", 7)
	f.Add("é/ü.ß", "/ü/é/ß.go", 1<<31)
	f.Fuzz(func(t *testing.T, fn, file string, line int) {
		fr := Frame{Function: fn, File: file, Line: line}
		loc := fr.Location()
		short := fr.ShortFile()
		sfn := ShortFunction(fn)
		if !strings.HasSuffix(file, short) || strings.Count(short, "/") > 1 {
			t.Fatalf("ShortFile(%q) = %q", file, short)
		}
		if !strings.HasSuffix(fn, sfn) || strings.Contains(sfn, "/") {
			t.Fatalf("ShortFunction(%q) = %q", fn, sfn)
		}
		if fr.IsZero() {
			if !strings.Contains(loc, "unknown location") {
				t.Fatalf("Location of the zero frame = %q", loc)
			}
		} else if want := short + ":" + strconv.Itoa(line) + " (" + sfn + ")"; loc != want {
			t.Fatalf("Location = %q, want %q", loc, want)
		}
		if got, want := Format([]Frame{fr, fr}), strings.Repeat(fn+"()\n\t"+file+":"+strconv.Itoa(line)+"\n", 2); got != want {
			t.Fatalf("Format = %q, want %q", got, want)
		}
		if !Equal([]Frame{fr}, []Frame{fr}) || Equal([]Frame{fr}, nil) {
			t.Fatal("Equal is wrong")
		}
	})
}

// FuzzCulprit checks Culprit against its definition on arbitrary stacks
// (function names separated by newlines) and extra prefixes (separated by
// commas), and isWrapper's digit rules.
func FuzzCulprit(f *testing.F) {
	f.Add("runtime.goexit\ndatabase/sql.(*DB).conn\ngithub.com/acme/app.handler\nmain.main", "")
	f.Add("github.com/acme/dbutil.Get\ngithub.com/acme/app.handler", "github.com/acme/dbutil.")
	f.Add("github.com/jackc/pgx/v5.(*Conn).Query\ngorm.io/gorm.(*DB).Find", ",")
	f.Add("", "x")
	f.Add("main.f.gowrap12\nmain.g-fm\nruntime.call16\nruntime.debugCall8192\nmain.h.deferwrap\n", "main.")
	f.Fuzz(func(t *testing.T, names, extras string) {
		var frames []Frame
		for i, fn := range strings.Split(names, "\n") {
			frames = append(frames, Frame{Function: fn, File: "/f.go", Line: i})
			_ = isWrapper(fn, "/f.go")
			if dot := strings.LastIndexByte(fn, '.'); dot >= 0 {
				last := fn[dot+1:]
				if rest, ok := strings.CutPrefix(last, "gowrap"); ok && !strings.HasPrefix(fn, "runtime.") {
					if got, want := isWrapper(fn, "/f.go"), allDigits(rest) || strings.HasSuffix(fn, "-fm"); got != want {
						t.Fatalf("isWrapper(%q) = %v, want %v", fn, got, want)
					}
				}
			}
		}
		extra := strings.Split(extras, ",")
		i := Culprit(frames, extra)
		want := -1
		for j, fr := range frames {
			lib := false
			for _, p := range append(append([]string(nil), LibraryPrefixes...), extra...) {
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

// FuzzAllDigits checks allDigits against its definition.
func FuzzAllDigits(f *testing.F) {
	for _, s := range []string{"", "0", "123", "12a", "٣", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := s != "" && strings.Trim(s, "0123456789") == ""
		if got := allDigits(s); got != want {
			t.Fatalf("allDigits(%q) = %v", s, got)
		}
	})
}
