//go:build !(amd64 || arm64) || pgxleak_callers

package stack

import "runtime"

// Capture records the program counters of the calling goroutine into pcs,
// skipping skip frames above Capture's caller, and returns how many it
// wrote. It allocates nothing and does no symbolising. On this
// architecture (or with the build tag pgxleak_callers) it calls
// runtime.Callers; on amd64 and arm64 it unwinds frame pointers (fp.go).
//
//go:noinline
func Capture(skip int, pcs []uintptr) int {
	if len(pcs) == 0 {
		return 0
	}
	return runtime.Callers(skip+2, pcs)
}

// FramePointers reports whether Capture unwinds frame pointers; never here.
func FramePointers() bool { return false }

// SetFramePointers has no effect here; it reports false.
func SetFramePointers(bool) bool { return false }

// Fallbacks counts captures that fell back to runtime.Callers; always 0
// here, where there is nothing to fall back from.
func Fallbacks() uint64 { return 0 }
