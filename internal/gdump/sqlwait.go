package gdump

import (
	"database/sql"
	"strings"
	"unsafe"
)

// connFunc is the function a goroutine waiting for a pooled connection is
// blocked in: database/sql.(*DB).conn parks in a select on its
// connRequest channel and ctx.Done() once the pool is at MaxOpenConns.
const connFunc = "database/sql.(*DB).conn"

// ConnWaitFrame returns the database/sql.(*DB).conn frame of a goroutine
// blocked waiting for a pooled connection, and whether it is one: its
// state is "select" (possibly with a suffix such as " (durable)") and its
// innermost frame, after any runtime frames (shown under
// GOTRACEBACK=system), is (*DB).conn. A goroutine in (*DB).conn in any
// other state (running, or briefly on db.mu: "sync.Mutex.Lock") is not
// waiting for the pool.
func (g *Goroutine) ConnWaitFrame() (Frame, bool) {
	if !strings.HasPrefix(g.State, "select") || strings.HasPrefix(g.State, "select (no cases)") {
		return Frame{}, false
	}
	for _, f := range g.Frames {
		if strings.HasPrefix(f.Function, "runtime.") {
			continue
		}
		return f, f.Function == connFunc
	}
	return Frame{}, false
}

// WaitingForConn reports whether g is blocked waiting for a connection
// from a database/sql pool (see ConnWaitFrame).
func (g *Goroutine) WaitingForConn() bool {
	_, ok := g.ConnWaitFrame()
	return ok
}

// WaitingDB returns the address of the *sql.DB that g waits on for a
// connection: the receiver, the first argument word of its (*DB).conn
// frame. ok is false if g is not waiting for a connection, or the word is
// missing or marked "?" (possibly stale). The runtime prints the word from
// the frame's argument spill slot; (*DB).conn uses its receiver after the
// select, so the slot is live and current. Compare it with
// uintptr(unsafe.Pointer(db)), or Args' first word with
// fmt.Sprintf("%p", db). Verified by this package's tests with and
// without the race detector, with inlining off (-gcflags=-l) and on, on
// Go 1.26; a future database/sql that restructures conn could make it
// unavailable (ok false), never a different pointer.
func (g *Goroutine) WaitingDB() (addr uintptr, ok bool) {
	f, ok := g.ConnWaitFrame()
	if !ok {
		return 0, false
	}
	v, ok := f.Arg(0)
	if !ok || v == 0 {
		return 0, false
	}
	return uintptr(v), true
}

// WaitingOn reports whether g is blocked waiting for a connection of db.
// A false answer when WaitingForConn is true means the pool is another
// one, or the receiver word was not printed reliably (WaitingDB's ok).
func (g *Goroutine) WaitingOn(db *sql.DB) bool {
	addr, ok := g.WaitingDB()
	return ok && db != nil && addr == uintptr(unsafe.Pointer(db))
}

// UserFrame returns the innermost frame for which skip returns false,
// or, with skip nil, the innermost frame outside the runtime and the
// standard library (a package path whose first element has no dot, such
// as "database/sql" or "net/http", counts as standard), and whether
// there is one.
func (g *Goroutine) UserFrame(skip func(Frame) bool) (Frame, bool) {
	if skip == nil {
		skip = IsStd
	}
	for _, f := range g.Frames {
		if !skip(f) {
			return f, true
		}
	}
	return Frame{}, false
}

// IsStd reports whether f is a standard library or runtime frame, by its
// package path: no dot in the first path element, except "main".
func IsStd(f Frame) bool {
	pkg := f.Package()
	if pkg == "" || pkg == "main" {
		return pkg == ""
	}
	first, _, _ := strings.Cut(pkg, "/")
	return !strings.Contains(first, ".")
}
