package stack

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
		require.True(t, strings.HasSuffix(file, short) && strings.Count(short, "/") <= 1, "ShortFile(%q) = %q", file, short)
		require.True(t, strings.HasSuffix(fn, sfn) && !strings.Contains(sfn, "/"), "ShortFunction(%q) = %q", fn, sfn)
		if fr.IsZero() {
			require.Contains(t, loc, "unknown location", "the zero frame's Location")
		} else {
			require.Equal(t, short+":"+strconv.Itoa(line)+" ("+sfn+")", loc, "Location")
		}
		require.Equal(t, strings.Repeat(fn+"()\n\t"+file+":"+strconv.Itoa(line)+"\n", 2), Format([]Frame{fr, fr}), "Format")
		require.True(t, Equal([]Frame{fr}, []Frame{fr}), "Equal of a frame and itself")
		require.False(t, Equal([]Frame{fr}, nil), "Equal of a frame and none")
	})
}

// FuzzAllDigits checks allDigits against its definition.
func FuzzAllDigits(f *testing.F) {
	for _, s := range []string{"", "0", "123", "12a", "٣", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := s != "" && strings.Trim(s, "0123456789") == ""
		require.Equal(t, want, allDigits(s), "allDigits(%q)", s)
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
			require.Equal(t, allDigits(rest) || strings.HasSuffix(fn, "-fm"), got, "isWrapper(%q)", fn)
		}
	})
}
