// Package gdump takes and parses goroutine dumps, off the hot path, so
// that connection checkouts recorded with a goroutine ID (internal/goid)
// can be joined with what each goroutine is doing now, and so that the
// goroutines waiting for a pooled connection can be found.
//
// # What it does
//
// Take calls runtime.Stack(buf, true), growing buf until the dump fits
// (up to a bound, MaxBytes by default), and Parse turns the text into
// Goroutines: ID, State ("IO wait", "select", "chan receive",
// "sync.Mutex.Lock", "running", ...), Wait (whole minutes, as the runtime
// prints it), Locked, Frames (function, raw argument words, file, line),
// CreatedBy and the creating goroutine's ID, and, with
// GODEBUG=tracebackancestors, the Ancestors' stacks. Lookup finds a
// goroutine by ID; a goroutine absent from a complete dump has exited
// (the runtime never reuses IDs).
//
// A Limiter takes at most one dump per interval and hands the cached one
// to everyone else, so that a storm of reports stops the world once.
//
// Goroutine.WaitingForConn recognises a goroutine blocked in
// database/sql.(*DB).conn's select, the wait for a connection when the
// pool is at MaxOpenConns, and WaitingOn / WaitingDB tell which *sql.DB
// from the receiver word the runtime prints as the frame's first argument.
//
// # Cost
//
// runtime.Stack(buf, true) stops the world while it formats every
// goroutine's stack: the whole program pauses. On the shared 2-core VM
// this was written on, 10,000 goroutines parked on a channel (2.7 MB of
// text) took 68-88 ms in runtime.Stack (BenchmarkStack10k) and 17-34 ms
// to parse (BenchmarkParse10k, 3 allocations: frames share one backing
// array and every string shares the dump's text); BenchmarkTake10k, both
// together with the buffer, 83-170 ms. That is several microseconds of
// pause per goroutine: never call Take on a request path, and rate-limit
// it (Limiter). A Limiter's cached answer costs about 300 ns.
//
// # Failure modes
//
//   - The dump format is the runtime's, not a documented API. Parse skips
//     any line it does not recognise and never panics (fuzzed); a
//     changed format degrades to missing fields, not wrong ones.
//   - A dump larger than the bound is cut: Snapshot.Truncated is set, the
//     goroutines printed last are missing (they may be alive), and the
//     last one present is marked Truncated. A cut line is dropped rather
//     than parsed (a cut "file.go:12" could be line 123).
//   - Wait is in whole minutes; 0 means "under a minute" or "not
//     waiting".
//   - Argument words can be stale: the runtime marks those with "?", and
//     Frame.Arg refuses them. Inlined frames print no arguments.
//     WaitingDB therefore returns ok=false rather than a wrong pointer
//     when the word is unavailable.
//   - Frames of the runtime are hidden unless GOTRACEBACK=system; deep
//     stacks are elided in the middle (Goroutine.Elided).
//   - IsStd / UserFrame guess "standard library" from the package path
//     (no dot in the first element): a module path without a dot
//     ("myapp/...") is taken for the standard library; pass a skip
//     function when that matters.
package gdump
