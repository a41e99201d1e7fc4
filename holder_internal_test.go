package pgxleak

import (
	"runtime"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak/internal/gdump"
)

// TestHolderDetachedFromDump: a holder's state and frames are copied out
// of the goroutine dump they come from. A parsed dump's strings are slices
// of its whole text (up to gdump.MaxBytes), and a report that keeps its
// holder (the recent reports, an OnLeak callback's copy) would keep all of
// it alive: a memory cost that grew with the goroutines of a loaded
// machine (issue 19).
func TestHolderDetachedFromDump(t *testing.T) {
	buf := make([]byte, 64<<10)
	text := string(buf[:runtime.Stack(buf, false)])
	gs := gdump.Parse(text)
	require.Len(t, gs, 1, "the test's own goroutine")
	lo := uintptr(unsafe.Pointer(unsafe.StringData(text)))
	inDump := func(s string) bool {
		at := uintptr(unsafe.Pointer(unsafe.StringData(s)))
		return s != "" && at >= lo && at < lo+uintptr(len(text))
	}
	require.True(t, inDump(gs[0].Frames[0].Function), "the parsed dump's strings are not slices of its text: the test checks nothing")

	p := newTestTracker(t, nil)
	h := p.holderFrom(&gs[0], matchedByID)
	require.NotEmpty(t, h.Stack)
	require.NotEmpty(t, h.At.Function, "the holder's line of user code")
	strs := map[string]string{"state": h.State, "at function": h.At.Function, "at file": h.At.File}
	for _, f := range h.Stack {
		strs["frame function "+f.Function] = f.Function
		strs["frame file "+f.File] = f.File
	}
	for what, s := range strs {
		assert.False(t, inDump(s), "the holder's %s %q is a slice of the dump's text", what, s)
	}
}
