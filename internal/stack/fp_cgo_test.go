//go:build cgo

package stack

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/pgxleak/pgxleak/internal/stack/internal/cgotest"
)

// TestCaptureCgoCallback captures in Go code called back from C. The
// frame-pointer chain leaves the goroutine's stack at runtime.cgocallback
// (its saved frame pointer is on the system stack), which Capture must
// detect without reading outside the stack, and then give the frames
// runtime.Callers gives.
func TestCaptureCgoCallback(t *testing.T) {
	t.Run("goroutine thread", func(t *testing.T) {
		var fp, rc []Frame
		before := Fallbacks()
		cgotest.Call(func() { fp, rc = both(128) })
		check(t, fp, rc, "cgotestCallback", "runtime.cgocallback", "TestCaptureCgoCallback.func1")
		assert.False(t, FramePointers() && Fallbacks() == before, "the capture did not fall back to runtime.Callers across cgo frames")
	})
	t.Run("garbage frame pointer in C", func(t *testing.T) {
		var fp, rc []Frame
		cgotest.CallGarbageFP(func() { fp, rc = both(128) })
		check(t, fp, rc, "cgotestCallback", "TestCaptureCgoCallback.func2")
	})
	t.Run("C thread", func(t *testing.T) {
		var fp, rc []Frame
		cgotest.CallFromThread(func() { fp, rc = both(128) })
		check(t, fp, rc, "cgotestCallback")
	})
	t.Run("buffer full before C", func(t *testing.T) {
		// The chain is only followed as far as the buffer: with room for
		// the innermost frames only, the frame-pointer walk suffices.
		var fp, rc []Frame
		cgotest.Call(func() { fp, rc = both(2) })
		check(t, fp, rc)
	})
}
