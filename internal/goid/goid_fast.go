//go:build (amd64 || arm64) && !pgxleak_nogoid

package goid

// ID returns the calling goroutine's ID: the number runtime.Stack prints
// in its "goroutine N [" header. When Fast reports true it reads the
// runtime's g directly: a few nanoseconds, no allocation. Otherwise it
// parses runtime.Stack (microseconds, one allocation). It returns 0 only
// when Available is false.
//
// It is implemented in goid_$GOARCH.s, so that the fast path is a single
// call with no Go frame: it tests fast, loads off and reads g+off, or
// tail-calls slowID.
func ID() uint64

// load returns the 8-byte word at byte offset off in the current
// goroutine's runtime.g, for the self-check. off must be below the size of
// runtime.g (the self-check only passes offsets below 256; g is larger on
// every Go release). It is implemented in goid_$GOARCH.s.
func load(off uintptr) uint64

const (
	fastSupported     = true
	unsupportedReason = ""
)
