package pgxleak

import (
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"sync"

	"github.com/pgxleak/pgxleak/internal/stack"
)

// The culprit policy, and the one rule for "whose code is this" that the
// culprit, the callers a report lists, a holder's current line and a
// waiter's line all follow (isUserFrame). A frame is the user's code
// unless it is:
//
//   - the harness: the runtime, the test runner or reflection;
//   - under a prefix the user named (WithLibraryPrefixes): the user's word
//     wins, in test files too;
//   - under a built-in library prefix (database/sql, drivers, known
//     wrappers, pgxleak), unless it is a test (a _test.go file, or a
//     package whose path ends in _test), so that a library's own tests are
//     named at their own line;
//   - the standard library: a package whose first path element has no dot
//     and that no module of the program provides, so that a main module
//     named "myservice" is the user's (see isStdlib).

// libraryPrefixes are the function-name prefixes of code that is never the
// culprit: the runtime, database/sql, drivers, pgxleak itself and the
// well-known wrappers over database/sql.
var libraryPrefixes = []string{
	"runtime.",
	"database/sql.",
	"database/sql/driver.",
	"context.",
	"sync.",
	"reflect.",
	"github.com/pgxleak/pgxleak.",
	"github.com/pgxleak/pgxleak/internal/",
	"github.com/jackc/", // pgx, pgconn, pgtype, puddle
	"github.com/lib/pq.",
	"github.com/DATA-DOG/go-sqlmock.",
	"github.com/jmoiron/sqlx.",
	"gorm.io/",
	"entgo.io/ent",
	"github.com/uptrace/bun",
	"github.com/uptrace/opentelemetry-go-extra/otelsql",
	"github.com/XSAM/otelsql",
	"github.com/ngrok/sqlmw",
	"github.com/luna-duclos/instrumentedsql",
	"github.com/pressly/goose",
	"github.com/Masterminds/squirrel",
	"github.com/doug-martin/goqu",
	"github.com/volatiletech/sqlboiler",
	"github.com/go-jet/jet",
	"github.com/stephenafamo/bob",
}

// harnessPrefixes are the code that runs the user's code but never is the
// culprit, test file or not: a goroutine's entry, the test runner and
// reflection. A stack with nothing else is reported as such.
var harnessPrefixes = []string{"runtime.", "testing.", "reflect."}

// isLibrary reports whether fn is under a built-in library prefix.
func isLibrary(fn string) bool {
	for _, p := range libraryPrefixes {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}

// isUserLibrary reports whether fn is under one of the user's prefixes
// (WithLibraryPrefixes). A generic function's or method's name is also
// matched without its type arguments, "app.(*repo[...]).get" as
// "app.(*repo).get", so that one prefix covers every instantiation.
func isUserLibrary(fn string, extra []string) bool {
	if len(extra) == 0 {
		return false
	}
	bare := fn
	if strings.Contains(fn, "[") {
		bare = strings.ReplaceAll(fn, "[...]", "")
	}
	for _, p := range extra {
		if p != "" && (strings.HasPrefix(fn, p) || strings.HasPrefix(bare, p)) {
			return true
		}
	}
	return false
}

// isHarness reports whether fn is the runtime, the test runner or
// reflection.
func isHarness(fn string) bool {
	for _, p := range harnessPrefixes {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}

// isTest reports whether a frame is test code: in a _test.go file, or in a
// package whose import path ends in _test.
func isTest(f stack.Frame) bool {
	return strings.HasSuffix(f.File, "_test.go") || strings.HasSuffix(packagePath(f.Function), "_test")
}

// isUserFrame reports whether f is the user's code (see the rule above):
// the culprit is the first such frame of a checkout, a holder's and a
// waiter's line the innermost such frame of their stacks.
func isUserFrame(f stack.Frame, extra []string) bool {
	switch {
	case isHarness(f.Function), isUserLibrary(f.Function, extra):
		return false
	case isTest(f):
		return true
	}
	return !isLibrary(f.Function) && !isStdlib(f.Function)
}

// isStdlib reports whether fn is in Go's standard library: the first
// element of its package path has no dot ("net/http", "database/sql"),
// the package is not main, and no module of the program provides it. A
// main module without a dot in its path ("module myservice"), or a
// dependency so named, is the user's: runtime/debug.ReadBuildInfo names
// them, in binaries and test binaries alike. Without build information
// (a program built outside module mode) the dot rule alone decides.
func isStdlib(fn string) bool {
	pkg := packagePath(fn)
	first, _, _ := strings.Cut(pkg, "/")
	if pkg == "main" || strings.Contains(first, ".") {
		return false
	}
	for _, m := range dotlessModules() {
		if pkg == m || strings.HasPrefix(pkg, m+"/") {
			return false
		}
	}
	return true
}

// dotlessModules returns the paths without a dot in their first element of
// the program's main module and its dependencies, read once.
var dotlessModules = sync.OnceValue(func() []string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	var ms []string
	for _, m := range append([]*debug.Module{&bi.Main}, bi.Deps...) {
		if m == nil {
			continue
		}
		if first, _, _ := strings.Cut(m.Path, "/"); m.Path != "" && !strings.Contains(first, ".") {
			ms = append(ms, m.Path)
		}
	}
	return ms
})

// packagePath returns the import path of a fully qualified function name:
// "github.com/acme/app.(*S).get" gives "github.com/acme/app".
func packagePath(fn string) string {
	slash := strings.LastIndexByte(fn, '/')
	if dot := strings.IndexByte(fn[slash+1:], '.'); dot >= 0 {
		return fn[:slash+1+dot]
	}
	return fn
}

// culpritIndex returns the index in frames of the first frame of the
// user's code (see isUserFrame), or -1 when there is none.
func culpritIndex(frames []stack.Frame, extra []string) int {
	for i, f := range frames {
		if isUserFrame(f, extra) {
			return i
		}
	}
	return -1
}

// noCulpritReason says why a stack of recorded program counters, resolved
// to frames, has no culprit, and what to do. truncated means the capture
// buffer was full, so the user's frame may lie deeper.
func noCulpritReason(frames []stack.Frame, recorded int, truncated bool) string {
	var pkgs []string
	for _, f := range frames {
		p := packagePath(f.Function)
		if slices.Contains(pkgs, p) {
			continue
		}
		if len(pkgs) == 4 {
			pkgs = append(pkgs, "…")
			break
		}
		pkgs = append(pkgs, p)
	}
	seen := strings.Join(pkgs, ", ")
	if truncated {
		return fmt.Sprintf("no frame outside %s in the %d recorded; raise WithStackDepth (the user's frame is typically 8–12 deep)", seen, recorded)
	}
	return fmt.Sprintf("no frame of the application in its whole stack of %d (%s): only libraries, the runtime, the test runner or reflection", recorded, seen)
}
