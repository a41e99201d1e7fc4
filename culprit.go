package pgxleak

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pgxleak/pgxleak/internal/stack"
)

// The culprit policy: which frame of a checkout's stack a report names.
// It is the first frame that belongs to the user's code rather than to the
// runtime, the testing harness, database/sql, a driver or a known database
// wrapper. A frame of a test (a _test.go file, or a package whose path ends
// in _test) is always the user's code, even under a library prefix, so that
// a library's own tests are named at their own line.

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

// isLibrary reports whether fn belongs to code that is never the culprit,
// checking libraryPrefixes and then extra.
func isLibrary(fn string, extra []string) bool {
	for _, p := range libraryPrefixes {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	for _, p := range extra {
		if p != "" && strings.HasPrefix(fn, p) {
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

// isUserFrame reports whether f may be the culprit: not the harness, and
// either test code or outside the libraries.
func isUserFrame(f stack.Frame, extra []string) bool {
	if isHarness(f.Function) {
		return false
	}
	return isTest(f) || !isLibrary(f.Function, extra)
}

// isStdlib reports whether f is in Go's standard library: the first
// element of its import path has no dot, and its file lies under a src
// directory by that path (GOROOT/src/net/http/server.go). Reports leave
// such frames out of the application's callers.
func isStdlib(f stack.Frame) bool {
	pkg := packagePath(f.Function)
	first, _, _ := strings.Cut(pkg, "/")
	return pkg != "main" && !strings.Contains(first, ".") && strings.Contains(f.File, "/src/"+pkg+"/")
}

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
