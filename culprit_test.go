package pgxleak_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak"
	"github.com/pgxleak/pgxleak/internal/leaktest"
	"github.com/pgxleak/pgxleak/internal/pgtest"
	"github.com/pgxleak/pgxleak/internal/stack"
)

// TestCulpritIndex: test code is the user's even under a built-in library
// prefix, but not under one the user named; the runtime, the test runner,
// reflection and the standard library never are.
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
			{Function: "gorm.io/gorm_test.helper", File: "/x/generated.go"}, runner}, nil, 1},
		{"only the test runner left", []stack.Frame{sql, gorm, runner, exit}, nil, -1},
		{"reflection is not the culprit", []stack.Frame{sql, call, {Function: "main.handler", File: "/app/main.go"}}, nil, 2},
		{"a wrapper under a library prefix", []stack.Frame{sql, {Function: "example.com/dbutil.Get", File: "/x/dbutil/get.go"},
			{Function: "example.com/app.run", File: "/x/app/run.go"}}, []string{"example.com/dbutil."}, 2},
		{"the user's prefix wins in a test file", []stack.Frame{sql, {Function: "myapp.(*repo).get", File: "/x/myapp/repo_test.go"},
			{Function: "myapp.TestGet", File: "/x/myapp/repo_test.go"}, runner}, []string{"myapp.(*repo)."}, 2},
		{"the user's prefix names a generic type without its arguments", []stack.Frame{sql,
			{Function: "example.com/myapp.(*repo[...]).get", File: "/x/myapp/repo.go"}, {Function: "example.com/myapp.(*repo[...]).get-fm", File: "/x/myapp/repo.go"},
			{Function: "example.com/myapp.run", File: "/x/myapp/run.go"}}, []string{"example.com/myapp.(*repo)."}, 3},
		{"the standard library is not the user's", []stack.Frame{sql,
			{Function: "net/http.HandlerFunc.ServeHTTP", File: "/go/src/net/http/server.go"}, {Function: "main.main", File: "/app/main.go"}}, nil, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, pgxleak.CulpritIndex(tc.frames, tc.extra))
		})
	}
}

// repo and genericRepo are a repository helper in a test file: named with
// WithLibraryPrefixes, they are never the culprit, whatever their shape;
// the line that called them is.
type repo struct{ db *sql.DB }

// conn is small enough to be inlined into its caller.
func (r *repo) conn(ctx context.Context) (*sql.Conn, error) { return r.db.Conn(ctx) }

//go:noinline
func (r *repo) connNoinline(ctx context.Context) (*sql.Conn, error) {
	return r.db.Conn(ctx)
}

type genericRepo[T any] struct{ db *sql.DB }

//go:noinline
func (r *genericRepo[T]) conn(ctx context.Context) (*sql.Conn, error) { return r.db.Conn(ctx) }

// TestCulpritUserPrefixInTestFile: a prefix the user names wins over the
// rule that test code is the user's: the helper in this _test.go file is
// skipped, inlined or not, called as a method value or generic, and the
// caller's line is the culprit.
func TestCulpritUserPrefixInTestFile(t *testing.T) {
	db, _ := openTest(t, pgxleak.WithLibraryPrefixes(
		"github.com/pgxleak/pgxleak_test.(*repo).", "github.com/pgxleak/pgxleak_test.(*genericRepo)."))
	r, g := &repo{db}, &genericRepo[int]{db}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		take func() (*sql.Conn, site)
	}{
		{"inlined", func() (*sql.Conn, site) {
			line := lineBelow()
			c, err := r.conn(ctx)
			require.NoError(t, err)
			return c, line
		}},
		{"noinline", func() (*sql.Conn, site) {
			line := lineBelow()
			c, err := r.connNoinline(ctx)
			require.NoError(t, err)
			return c, line
		}},
		{"method value", func() (*sql.Conn, site) {
			get := r.connNoinline
			line := lineBelow()
			c, err := get(ctx)
			require.NoError(t, err)
			return c, line
		}},
		{"generic", func() (*sql.Conn, site) {
			line := lineBelow()
			c, err := g.conn(ctx)
			require.NoError(t, err)
			return c, line
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, line := tc.take()
			defer c.Close()
			cs := checkouts(t, db)
			require.Len(t, cs, 1)
			assert.Equal(t, line.Line, cs[0].Culprit.Line, "culprit %s, want the caller's line %s\n%s", cs[0].Culprit, line, stackString(cs[0].Stack))
			assert.Equal(t, filepath.Base(line.File), filepath.Base(cs[0].Culprit.File))
		})
	}
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
	f.Add("myapp.(*repo).get@/app/repo_test.go\nmyapp.TestGet@/app/repo_test.go", "myapp.(*repo).")
	f.Add("myapp.(*repo[...]).get\nnet/http.HandlerFunc.ServeHTTP\nmyservice/internal/api.get\nmain.main", "myapp.(*repo).")
	var modules []string // the program's modules: none is the standard library
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range append([]*debug.Module{&bi.Main}, bi.Deps...) {
			modules = append(modules, m.Path)
		}
	}
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
			user := false // a prefix the user named wins, even over test code
			for _, p := range extra {
				if p != "" && (strings.HasPrefix(fr.Function, p) || strings.HasPrefix(strings.ReplaceAll(fr.Function, "[...]", ""), p)) {
					user = true
				}
			}
			if user {
				continue
			}
			pkg := fr.Function
			if dot := strings.Index(pkg[strings.LastIndex(pkg, "/")+1:], "."); dot >= 0 {
				pkg = pkg[:strings.LastIndex(pkg, "/")+1+dot]
			}
			if strings.HasSuffix(fr.File, "_test.go") || strings.HasSuffix(pkg, "_test") {
				want = j
				break
			}
			lib := false
			for _, p := range pgxleak.LibraryPrefixes {
				if strings.HasPrefix(fr.Function, p) {
					lib = true
				}
			}
			first, _, _ := strings.Cut(pkg, "/")
			std := pkg != "main" && !strings.Contains(first, ".") && !slices.ContainsFunc(modules, func(m string) bool {
				return pkg == m || strings.HasPrefix(pkg, m+"/")
			})
			if !lib && !std {
				want = j
				break
			}
		}
		require.Equal(t, want, i, "Culprit of frames %q, extra %q", names, extras)
	})
}

// TestDotlessModuleIsTheUsers: in a program whose main module has no dot in
// its path ("module myservice"), the holder's current line and the
// waiter's line are the program's own, not taken for the standard
// library. The program (testdata/dotless) is built as a module of its own
// against this one.
func TestDotlessModuleIsTheUsers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	dir, goIn := goModule(ctx, t, "dotless", "myservice")
	goIn("build", "-mod=mod", "-o", "dotless", ".")
	goIn("test", "-mod=mod", "-c", "-o", "app.test", "./app")

	type report struct {
		Culprit, HolderAt pgxleak.Frame
		Holder            string
		WaiterAt          []pgxleak.Frame
	}
	run := func(t *testing.T, name string, args ...string) report {
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, filepath.Join(dir, name), args...)
		cmd.Env = append(os.Environ(), "DOTLESS_DSN="+pgtest.NewDatabase(t))
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		require.NoError(t, err, "%s: %s%s", name, out, stderr.String())
		line := strings.TrimSpace(string(out))
		if i := strings.Index(line, "REPORT "); i >= 0 { // the test binary's line
			line, _, _ = strings.Cut(line[i+len("REPORT "):], "\n")
		}
		var got report
		require.NoError(t, json.Unmarshal([]byte(line), &got), "%s", out)
		return got
	}

	src, err := os.ReadFile("testdata/dotless/app/app.go")
	require.NoError(t, err)
	lineOf := func(marker string) int {
		for i, l := range strings.Split(string(src), "\n") {
			if strings.HasSuffix(l, "// "+marker) {
				return i + 1
			}
		}
		require.FailNow(t, "no marked line", "no line marked %q", marker)
		return 0
	}
	at := func(f pgxleak.Frame) string {
		return fmt.Sprintf("%s:%d (%s)", filepath.Base(f.File), f.Line, f.Function)
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T) report
	}{
		{"binary", func(t *testing.T) report { return run(t, "dotless") }},
		{"test binary", func(t *testing.T) report { return run(t, "app.test", "-test.run=TestReport") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.run(t)
			assert.Equal(t, fmt.Sprintf("app.go:%d (myservice/app.hold)", lineOf("checked out")), at(got.Culprit), "culprit")
			assert.Equal(t, fmt.Sprintf("app.go:%d (myservice/app.hold)", lineOf("holder now at")), at(got.HolderAt), "holder's current line; report: %s", got.Holder)
			if assert.Len(t, got.WaiterAt, 1, "waiters") {
				assert.Equal(t, fmt.Sprintf("app.go:%d (myservice/app.wait)", lineOf("waits")), at(got.WaiterAt[0]), "waiter's line")
			}
		})
	}
}
