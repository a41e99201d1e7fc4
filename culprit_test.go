package pgxleak_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/stack"
)

// TestCulpritIndex: test code is the user's even under a library prefix;
// the runtime, the test runner and reflection never are.
func TestCulpritIndex(t *testing.T) {
	sql := stack.Frame{Function: "database/sql.(*DB).QueryContext", File: "/go/src/database/sql/sql.go"}
	gorm := stack.Frame{Function: "gorm.io/gorm.(*DB).Find", File: "/mod/gorm.io/gorm/finisher_api.go"}
	runner := stack.Frame{Function: "testing.tRunner", File: "/go/src/testing/testing.go"}
	exit := stack.Frame{Function: "runtime.goexit", File: "/go/src/runtime/asm_amd64.s"}
	call := stack.Frame{Function: "reflect.Value.Call", File: "/go/src/reflect/value.go"}
	for _, tc := range []struct {
		name   string
		frames []stack.Frame
		extra  []string
		want   int
	}{
		{"GORM's external test package", []stack.Frame{sql, gorm,
			{Function: "gorm.io/gorm/tests_test.TestFind", File: "/mod/gorm.io/gorm/tests/query_test.go", Line: 824}, runner, exit}, nil, 2},
		{"a library's internal test file", []stack.Frame{sql, gorm,
			{Function: "gorm.io/gorm.TestScan", File: "/mod/gorm.io/gorm/scan_test.go"}, runner, exit}, nil, 2},
		{"a package ending in _test, whatever its file", []stack.Frame{sql,
			{Function: "example.com/dbutil_test.helper", File: "/x/generated.go"}, runner}, []string{"example.com/dbutil"}, 1},
		{"only the test runner left", []stack.Frame{sql, gorm, runner, exit}, nil, -1},
		{"reflection is not the culprit", []stack.Frame{sql, call, {Function: "main.handler", File: "/app/main.go"}}, nil, 2},
		{"a wrapper under a library prefix", []stack.Frame{sql, {Function: "example.com/dbutil.Get", File: "/x/dbutil/get.go"},
			{Function: "example.com/app.run", File: "/x/app/run.go"}}, []string{"example.com/dbutil."}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, pgxleak.CulpritIndex(tc.frames, tc.extra))
		})
	}
}

// TestCulpritInLibraryPrefixTest: a test in a package covered by a library
// prefix that leaks is named at its own line, not at testing.tRunner.
func TestCulpritInLibraryPrefixTest(t *testing.T) {
	rec := &leaktest.Recorder{}
	db, _ := openTest(t, pgxleak.WithLeakThreshold(threshold), rec.Option(),
		pgxleak.WithLibraryPrefixes("github.com/pgxleak/pgxleak_test."))
	line := lineBelow()
	c, err := db.Conn(context.Background())
	require.NoError(t, err)
	defer c.Close()
	rec.Wait(t, 5*time.Second, suspectedAt(line))
}

// TestNoCulpritSaysWhy: a report without a culprit says why, and what to
// do: capture off, or a stack too short to reach the user's frame.
func TestNoCulpritSaysWhy(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  pgxleak.Option
		want string
	}{
		{"capture off", pgxleak.WithStackDepth(0), "stack capture is off (WithStackDepth(0))"},
		{"too shallow", pgxleak.WithStackDepth(3), "in the 3 recorded; raise WithStackDepth (the user's frame is typically 8–12 deep)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &leaktest.Recorder{}
			db, _ := openTest(t, tc.opt, pgxleak.WithLeakThreshold(threshold), rec.Option())
			c, err := db.Conn(context.Background())
			require.NoError(t, err)
			defer c.Close()
			l := rec.Wait(t, 5*time.Second, func(l pgxleak.Leak) bool { return l.Kind == pgxleak.LeakSuspected })
			assert.Zero(t, l.Culprit, "no culprit")
			assert.Contains(t, l.NoCulprit, tc.want)
			assert.Contains(t, l.String(), tc.want)
			assert.NotContains(t, l.String(), "no stack recorded")
		})
	}
}

// FuzzCulprit checks the culprit policy against its definition on arbitrary
// stacks (one frame a line, "function" or "function@file") and extra
// prefixes (separated by commas).
func FuzzCulprit(f *testing.F) {
	f.Add("runtime.goexit\ndatabase/sql.(*DB).conn\ngithub.com/acme/app.handler\nmain.main", "")
	f.Add("github.com/acme/dbutil.Get\ngithub.com/acme/app.handler", "github.com/acme/dbutil.")
	f.Add("github.com/jackc/pgx/v5.(*Conn).Query\ngorm.io/gorm.(*DB).Find", ",")
	f.Add("", "x")
	f.Add("main.f.gowrap12\nmain.g-fm\nruntime.call16\nruntime.debugCall8192\nmain.h.deferwrap\n", "main.")
	f.Add("gorm.io/gorm.(*DB).Find\ngorm.io/gorm/tests_test.TestFind@/gorm/tests/query_test.go\ntesting.tRunner", "")
	f.Add("gorm.io/gorm.TestScan@/gorm/scan_test.go\nreflect.Value.Call\ntesting.tRunner@/x_test.go", "")
	f.Fuzz(func(t *testing.T, names, extras string) {
		var frames []stack.Frame
		for i, l := range strings.Split(names, "\n") {
			fn, file, ok := strings.Cut(l, "@")
			if !ok {
				file = "/f.go"
			}
			frames = append(frames, stack.Frame{Function: fn, File: file, Line: i})
		}
		extra := strings.Split(extras, ",")
		i := pgxleak.CulpritIndex(frames, extra)
		want := -1
		for j, fr := range frames {
			if strings.HasPrefix(fr.Function, "runtime.") || strings.HasPrefix(fr.Function, "testing.") || strings.HasPrefix(fr.Function, "reflect.") {
				continue // the harness is never the culprit
			}
			pkg := fr.Function
			if dot := strings.Index(pkg[strings.LastIndex(pkg, "/")+1:], "."); dot >= 0 {
				pkg = pkg[:strings.LastIndex(pkg, "/")+1+dot]
			}
			test := strings.HasSuffix(fr.File, "_test.go") || strings.HasSuffix(pkg, "_test")
			lib := false
			for _, p := range append(append([]string(nil), pgxleak.LibraryPrefixes...), extra...) {
				if p != "" && strings.HasPrefix(fr.Function, p) {
					lib = true
				}
			}
			if test || !lib {
				want = j
				break
			}
		}
		require.Equal(t, want, i, "Culprit of frames %q, extra %q", names, extras)
	})
}
