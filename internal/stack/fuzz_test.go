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

// FuzzIsWrapper checks isWrapper's digit rules on arbitrary function names.
func FuzzIsWrapper(f *testing.F) {
	for _, s := range []string{"main.f.gowrap12", "main.g-fm", "runtime.call16", "runtime.debugCall8192", "main.h.deferwrap", "main.f.gowrap1x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, fn string) {
		got := isWrapper(fn, "/f.go")
		dot := strings.LastIndexByte(fn, '.')
		if dot < 0 || strings.HasPrefix(fn, "runtime.") {
			return
		}
		if rest, ok := strings.CutPrefix(fn[dot+1:], "gowrap"); ok {
			if want := allDigits(rest) || strings.HasSuffix(fn, "-fm"); got != want {
				t.Fatalf("isWrapper(%q) = %v, want %v", fn, got, want)
			}
		}
	})
}
