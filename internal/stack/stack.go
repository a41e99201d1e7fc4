// Package stack captures call stacks cheaply and resolves them only when a
// report is made. It also picks the culprit: the first frame that belongs to
// the user's code rather than to the runtime, database/sql, a driver or a
// known database wrapper.
package stack

import (
	"runtime"
	"strconv"
	"strings"
)

// Capture records the program counters of the calling goroutine into pcs,
// skipping skip frames above Capture's caller, and returns how many it wrote.
// It allocates nothing and does no symbolising.
func Capture(skip int, pcs []uintptr) int {
	if len(pcs) == 0 {
		return 0
	}
	return runtime.Callers(skip+2, pcs)
}

// Frame is one resolved stack frame.
type Frame struct {
	Function string // fully qualified, e.g. "main.(*Server).getUser"
	File     string // absolute path of the source file
	Line     int
}

// IsZero reports whether f is the zero Frame.
func (f Frame) IsZero() bool { return f.Function == "" && f.File == "" && f.Line == 0 }

// ShortFile returns the file's last directory and name, e.g. "app/handler.go".
func (f Frame) ShortFile() string {
	file := f.File
	i := strings.LastIndexByte(file, '/')
	if i < 0 {
		return file
	}
	if j := strings.LastIndexByte(file[:i], '/'); j >= 0 {
		return file[j+1:]
	}
	return file
}

// Location returns "dir/file.go:42 (pkg.func)".
func (f Frame) Location() string {
	if f.IsZero() {
		return "unknown location (stack capture disabled)"
	}
	return f.ShortFile() + ":" + strconv.Itoa(f.Line) + " (" + ShortFunction(f.Function) + ")"
}

// ShortFunction strips the import path from a fully qualified function name:
// "github.com/acme/app.(*S).get" becomes "app.(*S).get".
func ShortFunction(fn string) string {
	slash := strings.LastIndexByte(fn, '/')
	return fn[slash+1:]
}

// Resolve symbolises pcs. Inlined calls are expanded, so the result may be
// longer than pcs.
func Resolve(pcs []uintptr) []Frame {
	if len(pcs) == 0 {
		return nil
	}
	frames := runtime.CallersFrames(pcs)
	out := make([]Frame, 0, len(pcs))
	for {
		f, more := frames.Next()
		if f.Function != "" || f.File != "" {
			out = append(out, Frame{Function: f.Function, File: f.File, Line: f.Line})
		}
		if !more {
			break
		}
	}
	return out
}

// LibraryPrefixes are the function-name prefixes of code that is never the
// culprit: the runtime, database/sql, drivers, pgxleak itself and the
// well-known wrappers over database/sql.
var LibraryPrefixes = []string{
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

// IsLibrary reports whether fn belongs to code that is never the culprit,
// checking LibraryPrefixes and then extra.
func IsLibrary(fn string, extra []string) bool {
	for _, p := range LibraryPrefixes {
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

// Culprit returns the index in frames of the first frame outside the
// libraries (see IsLibrary), or -1 when every frame is library code.
func Culprit(frames []Frame, extra []string) int {
	for i, f := range frames {
		if !IsLibrary(f.Function, extra) {
			return i
		}
	}
	return -1
}

// Format renders frames like runtime.Stack does for one goroutine:
// a function line, then a tab-indented file:line line.
func Format(frames []Frame) string {
	var b strings.Builder
	for _, f := range frames {
		b.WriteString(f.Function)
		b.WriteString("()\n\t")
		b.WriteString(f.File)
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(f.Line))
		b.WriteByte('\n')
	}
	return b.String()
}
