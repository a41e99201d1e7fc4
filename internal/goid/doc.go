// Package goid reads the calling goroutine's ID, cheaply enough for a
// connection checkout.
//
// # What it does
//
// ID returns the ID the runtime gives the calling goroutine: the N of
// "goroutine N [...]" in a goroutine dump (runtime.Stack), so that a
// checkout can later be joined with a dump of all goroutines.
//
// The runtime does not export the ID. On amd64 and arm64, ID reads it
// from the runtime's g, the per-goroutine structure the g register points
// to (an assembly stub: the TLS slot on amd64, R28 on arm64), at the
// offset of its goid field. That offset depends on the Go version's g
// layout: 152 bytes on Go 1.25, 1.26 and 1.27 (stack, stackguard0/1, _panic,
// _defer, m, the six-word gobuf sched, syscallsp/pc/bp, stktopsp, param,
// atomicstatus and stackLock come first). See offset_go125.go.
//
// # Self-check
//
// The offset is never trusted blindly. At init the package starts several
// goroutines and, in each and in the initialising goroutine, compares the
// word at the offset with the ID parsed from the goroutine's own
// runtime.Stack header ("goroutine N ["), the slow path. The IDs must be
// non-zero and pairwise distinct, and every read must equal its slow-path
// ID. If the offset known for this Go version fails, nearby 8-byte slots
// of the first 256 bytes of g are tried with the same test, so that a
// field moved by a later Go release is found again, and verified, rather
// than read wrongly; if none passes every goroutine, the fast path is off.
// Status says which of these happened.
//
// # Cost
//
// ID itself is the assembly stub, so the fast path is one direct call and
// six instructions: 3.7-4.0 ns on the shared 2-core VM this was written
// on, where an empty non-inlined Go call costs 2.8-3.3 ns; no allocation
// (BenchmarkID, BenchmarkCall, TestIDAllocs). The slow path formats and
// parses the caller's own stack header with runtime.Stack: about 5 µs
// there, one 64-byte allocation (BenchmarkSlow), and it is what ID does
// when Fast is false.
// Callers on a hot path should test Fast and record no identity (or fall
// back to something else, such as the checkout stack) when it is false.
//
// # Go versions
//
// The offset is chosen by build tag: go1.25 (Go 1.25, 1.26 and 1.27, the
// supported toolchains) gives 152; older toolchains 160 (their gobuf had
// one more word). Go 1.25's and 1.27's g have the same fields before goid
// as Go 1.26's (read from their runtime2.go; 1.27 changed only comments
// there), and the self-check passes at 152 on Go 1.25.0, 1.26 and 1.27.3
// on amd64 (CI runs all three); Go 1.26 has also been run on arm64 (under
// qemu-user). The self-check covers any mistake.
//
// # Failure modes and fallbacks
//
//   - Another architecture, the build tag pgxleak_nogoid, or
//     PGXLEAK_GOID=0 in the environment: Fast is false and ID takes the
//     slow path.
//   - The self-check fails (an unknown g layout): the same.
//   - The slow path itself cannot parse runtime.Stack's header (it never
//     has, but its format is not a documented API): Available is false and
//     ID returns 0, which is never a real goroutine ID. ID never returns a
//     wrong ID: both paths are checked against each other at init.
//   - Goroutine IDs are not reused by the runtime (a 64-bit counter), so
//     an ID that is absent from a later dump means the goroutine exited.
//
// The race detector does not see the stub's read (assembly is not
// instrumented), and the runtime writes goid only while creating the
// goroutine, before it runs, so there is no race to report.
package goid
