package stack

import (
	"errors"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests check that Capture (frame-pointer unwinding on amd64 and
// arm64) resolves to exactly the frames runtime.Callers gives, on the call
// shapes a checkout can come through. On other architectures Capture is
// runtime.Callers, and the tests pass trivially.

// both captures the stack of its caller twice, with Capture and with
// runtime.Callers, from the same call site.
//
//go:noinline
func both(n int) (fp, rc []Frame) {
	fps, rcs := make([]uintptr, n), make([]uintptr, n)
	nf := Capture(1, fps)
	nr := runtime.Callers(2, rcs)
	return Resolve(fps[:nf]), Resolve(rcs[:nr])
}

// check fails t unless fp equals rc, and rc reaches down to want.
func check(t testing.TB, fp, rc []Frame, want ...string) {
	t.Helper()
	require.True(t, Equal(fp, rc), "frame-pointer stack differs from runtime.Callers:\n--- Capture (%d frames)\n%s--- runtime.Callers (%d frames)\n%s",
		len(fp), Format(fp), len(rc), Format(rc))
	for _, w := range want {
		require.True(t, hasFunc(rc, w), "no frame %q in\n%s", w, Format(rc))
	}
}

func hasFunc(fs []Frame, suffix string) bool {
	for _, f := range fs {
		if strings.HasSuffix(f.Function, suffix) {
			return true
		}
	}
	return false
}

func TestFramePointersEnabled(t *testing.T) {
	switch {
	case runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" || callersTag:
		assert.False(t, FramePointers(), "frame pointers on, on an architecture without the helper or with the pgxleak_callers tag")
	case os.Getenv("PGXLEAK_FPUNWIND") == "0":
		assert.False(t, FramePointers(), "PGXLEAK_FPUNWIND=0 did not turn frame pointers off")
	default:
		assert.True(t, FramePointers(), "the start-up self-check failed on %s/%s", runtime.GOOS, runtime.GOARCH)
	}
}

func TestSetFramePointers(t *testing.T) {
	was := SetFramePointers(false)
	defer SetFramePointers(was)
	require.False(t, FramePointers(), "still on after SetFramePointers(false)")
	fp, rc := both(64)
	check(t, fp, rc, "TestSetFramePointers")
}

// Small functions the compiler inlines into their callers: the inlined
// frames have no frame record of their own, and CallersFrames must expand
// them from the physical return addresses.
func inlinedLeaf() ([]Frame, []Frame) { return both(64) }
func inlinedMid() ([]Frame, []Frame)  { return inlinedLeaf() }

//go:noinline
func notInlined() ([]Frame, []Frame) { return inlinedMid() }

func TestCaptureInlined(t *testing.T) {
	fp, rc := notInlined()
	check(t, fp, rc, "inlinedLeaf", "inlinedMid", "notInlined", "TestCaptureInlined", "runtime.goexit")
}

func TestCaptureGoroutine(t *testing.T) {
	var fp, rc []Frame
	var wg sync.WaitGroup
	wg.Add(1)
	go func(n int) { // a go statement with arguments gets a gowrap wrapper
		defer wg.Done()
		fp, rc = both(n)
	}(64)
	wg.Wait()
	check(t, fp, rc, "TestCaptureGoroutine.func1", "runtime.goexit")
	assert.False(t, hasFunc(rc, "TestCaptureGoroutine") && len(rc) > 3, "a new goroutine's stack should end at goexit:\n%s", Format(rc))
}

// recurse grows the stack (its frames are large), so that the runtime
// copies it to a bigger one before the capture.
//
//go:noinline
func recurse(depth int, n int) (fp, rc []Frame) {
	var pad [256]byte
	pad[depth%len(pad)] = byte(depth)
	if depth == 0 {
		fp, rc = both(n)
	} else {
		fp, rc = recurse(depth-1, n)
	}
	if pad[depth%len(pad)] != byte(depth) {
		panic("unreachable")
	}
	return fp, rc
}

func TestCaptureDeepStack(t *testing.T) {
	fp, rc := recurse(2000, 4096)
	check(t, fp, rc, "recurse", "TestCaptureDeepStack", "runtime.goexit")
	assert.GreaterOrEqual(t, len(rc), 2000)
}

// TestCaptureTruncated: with a buffer shorter than the stack, Capture
// records the innermost frames, bounded by the buffer.
func TestCaptureTruncated(t *testing.T) {
	for _, n := range []int{1, 2, 5, 32} {
		fps, rcs := make([]uintptr, n), make([]uintptr, 4096)
		nf, nr := recurseCapture(100, fps, rcs)
		require.Equal(t, n, nf, "frames captured into a buffer of %d", n)
		fp, rc := Resolve(fps[:nf]), Resolve(rcs[:nr])
		require.True(t, len(fp) >= n && len(fp) <= len(rc) && Equal(fp, rc[:len(fp)]),
			"buffer of %d: not the innermost frames:\n%s\nfull:\n%s", n, Format(fp), Format(rc[:min(len(rc), 40)]))
	}
}

//go:noinline
func recurseCapture(depth int, fps, rcs []uintptr) (nf, nr int) {
	var pad [256]byte
	pad[depth%len(pad)] = byte(depth)
	if depth == 0 {
		return Capture(0, fps), runtime.Callers(1, rcs) // one line: the same first frame
	}
	nf, nr = recurseCapture(depth-1, fps, rcs)
	if pad[depth%len(pad)] != byte(depth) {
		panic("unreachable")
	}
	return nf, nr
}

type capturer interface{ capture() ([]Frame, []Frame) }

type inner struct{}

//go:noinline
func (*inner) capture() ([]Frame, []Frame) { return both(64) }

// outer promotes inner's method; calling it through an interface goes
// through a compiler-generated wrapper.
type outer struct {
	_ int // inner's pointer is not at offset 0, so the wrapper adjusts the receiver
	*inner
}

type valueRecv struct{ n int }

//go:noinline
func (v valueRecv) capture() ([]Frame, []Frame) { return both(v.n) }

func TestCaptureWrappers(t *testing.T) {
	t.Run("promoted", func(t *testing.T) {
		var c capturer = outer{inner: &inner{}}
		fp, rc := c.capture()
		check(t, fp, rc, "(*inner).capture", "TestCaptureWrappers.func1")
	})
	t.Run("pointer-to-value", func(t *testing.T) {
		var c capturer = &valueRecv{n: 64} // (*valueRecv).capture is generated
		fp, rc := c.capture()
		check(t, fp, rc, "valueRecv.capture", "TestCaptureWrappers.func2")
	})
	t.Run("method value", func(t *testing.T) {
		f := (&inner{}).capture // a -fm closure
		fp, rc := call(f)
		check(t, fp, rc, "(*inner).capture", "TestCaptureWrappers.func3")
	})
	t.Run("defer", func(t *testing.T) {
		var fp, rc []Frame
		func() {
			defer func(n int) { fp, rc = both(n) }(64)
		}()
		check(t, fp, rc, "TestCaptureWrappers.func4")
	})
	t.Run("panic", func(t *testing.T) {
		var fp, rc []Frame
		func() {
			defer func() {
				recover()
				fp, rc = both(64) // runs inside gopanic
			}()
			panic(errors.New("boom"))
		}()
		check(t, fp, rc, "runtime.gopanic", "TestCaptureWrappers.func5")
	})
	t.Run("reflect.Call", func(t *testing.T) {
		out := reflect.ValueOf(both).Call([]reflect.Value{reflect.ValueOf(64)})
		fp, rc := out[0].Interface().([]Frame), out[1].Interface().([]Frame)
		check(t, fp, rc, "reflect.Value.Call", "TestCaptureWrappers.func6")
	})
	t.Run("reflect.MakeFunc", func(t *testing.T) {
		var f func() ([]Frame, []Frame)
		v := reflect.MakeFunc(reflect.TypeOf(f), func([]reflect.Value) []reflect.Value {
			fp, rc := both(64)
			return []reflect.Value{reflect.ValueOf(fp), reflect.ValueOf(rc)}
		})
		reflect.ValueOf(&f).Elem().Set(v)
		fp, rc := f()
		check(t, fp, rc, "TestCaptureWrappers.func7.1", "TestCaptureWrappers.func7")
	})
	t.Run("generic", func(t *testing.T) {
		fp, rc := generic[string](64)
		check(t, fp, rc, "generic[...]", "TestCaptureWrappers.func8")
		fp, rc = genericMethod[int]{}.capture()
		check(t, fp, rc, "genericMethod[...].capture", "TestCaptureWrappers.func8")
	})
}

//go:noinline
func call(f func() ([]Frame, []Frame)) ([]Frame, []Frame) { return f() }

//go:noinline
func generic[T any](n int) ([]Frame, []Frame) {
	var zero T
	_ = zero
	return both(n)
}

type genericMethod[T any] struct{ _ T } // a receiver whose shape depends on T

//go:noinline
func (g genericMethod[T]) capture() ([]Frame, []Frame) { return both(64) }

// TestCaptureConcurrentGC captures on many goroutines while the collector
// runs and stacks grow and shrink, and checks every capture. Run it with
// -race: it also checks that Capture reads nothing racy.
func TestCaptureConcurrentGC(t *testing.T) {
	before := Fallbacks()
	defer func() { t.Logf("%d of 800 captures fell back to runtime.Callers", Fallbacks()-before) }()
	stop := make(chan struct{})
	var gcwg sync.WaitGroup
	gcwg.Add(1)
	go func() {
		defer gcwg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				fp, rc := recurse((g*7+i*13)%300, 512)
				if !Equal(fp, rc) {
					select {
					case errs <- "Capture:\n" + Format(fp) + "runtime.Callers:\n" + Format(rc):
					default:
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	gcwg.Wait()
	close(errs)
	for e := range errs {
		assert.Fail(t, "frame-pointer stack differs from runtime.Callers", e)
	}
}

func TestIsWrapper(t *testing.T) {
	for fn, want := range map[string]bool{
		"testing.(*T).Run.gowrap1":            true,
		"main.main.deferwrap12":               true,
		"pkg.(*T).M-fm":                       true,
		"runtime.deferreturn":                 true,
		"runtime.call32":                      true,
		"runtime.call1073741824":              true,
		"reflect.makeFuncStub":                true,
		"reflect.callReflect":                 true,
		"runtime.debugCall32":                 true,
		"runtime.callers":                     false,
		"runtime.call":                        false,
		"main.gowrap":                         false,
		"main.gowrapper1x":                    false,
		"github.com/a/b.(*C).deferwrapped":    false,
		"github.com/acme/app.(*Server).serve": false,
	} {
		assert.Equal(t, want, isWrapper(fn, "x.go"), "isWrapper(%q)", fn)
	}
	assert.True(t, isWrapper("pkg.(*T).M", "<autogenerated>"), "an <autogenerated> frame is a wrapper")
}

func BenchmarkCapture(b *testing.B) {
	for _, mode := range []struct {
		name string
		fp   bool
	}{{"fp", true}, {"callers", false}} {
		for _, depth := range []int{8, 32} {
			b.Run("unwind="+mode.name+"/frames="+itoa(depth), func(b *testing.B) {
				if mode.fp && !FramePointers() {
					b.Skip("frame pointers unavailable")
				}
				was := SetFramePointers(mode.fp)
				defer SetFramePointers(was)
				pcs := make([]uintptr, depth)
				b.ReportAllocs()
				benchDeep(40, b, pcs) // a stack deeper than the buffer
			})
		}
	}
}

//go:noinline
func benchDeep(depth int, b *testing.B, pcs []uintptr) {
	if depth > 0 {
		benchDeep(depth-1, b, pcs)
		return
	}
	for b.Loop() {
		if Capture(0, pcs) != len(pcs) {
			b.Fatal("short capture")
		}
	}
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}
