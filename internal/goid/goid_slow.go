//go:build !(amd64 || arm64) || pgxleak_nogoid

package goid

// ID returns the calling goroutine's ID: the number runtime.Stack prints
// in its "goroutine N [" header. On this build it parses runtime.Stack
// (microseconds, one allocation); Fast reports false. It returns 0 only
// when Available is false.
func ID() uint64 { return slowID() }

// load is never called here: fastSupported is false.
func load(uintptr) uint64 { return 0 }

const fastSupported = false
