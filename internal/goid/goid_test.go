package goid

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStatus(t *testing.T) {
	t.Logf("status: %s (fast=%v available=%v offset=%d, %s/%s %s)", Status(), Fast(), Available(), Offset(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	require.True(t, Available(), "slow path unavailable: %s", Status())
	require.Equal(t, fastSupported, Fast(), "Fast() on %s (status %q)", runtime.GOARCH, Status())
	if Fast() {
		assert.Equal(t, int(knownOffset), Offset(), "the known offset for %s", runtime.Version())
		assert.True(t, strings.HasPrefix(Status(), "fast: "), "status %q", Status())
	} else {
		assert.Equal(t, -1, Offset())
		assert.True(t, strings.HasPrefix(Status(), "slow: "), "status %q", Status())
	}
}

// TestIDMatchesSlow compares ID with the slow path in many concurrent
// goroutines, some with grown stacks and some locked to their thread.
func TestIDMatchesSlow(t *testing.T) {
	const n = 200
	var wg sync.WaitGroup
	ids := make([]uint64, n)
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%3 == 1 {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
			}
			check := func() {
				fastID, slow := ID(), Slow()
				if fastID != slow || fastID == 0 {
					errs <- fmt.Sprintf("goroutine %d: ID %d, slow %d", i, fastID, slow)
				}
				ids[i] = fastID
			}
			if i%2 == 0 {
				deep(64, check) // after the stack has grown and been copied
			} else {
				check()
			}
			runtime.Gosched()
			if got := ID(); got != ids[i] {
				errs <- fmt.Sprintf("goroutine %d: ID changed from %d to %d across a reschedule", i, ids[i], got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		assert.Fail(t, e)
	}
	seen := map[uint64]bool{}
	for _, id := range ids {
		assert.False(t, seen[id], "ID %d seen twice", id)
		seen[id] = true
	}
}

//go:noinline
func deep(n int, f func()) {
	var pad [256]byte
	if n == 0 {
		f()
		return
	}
	deep(n-1, f)
	_ = pad
}

// TestIDInDump checks that ID names the goroutine as a full dump does.
func TestIDInDump(t *testing.T) {
	id := ID()
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	want := fmt.Sprintf("goroutine %d [running]:\n", id)
	assert.True(t, strings.HasPrefix(string(buf), want), "dump starts %q, want %q", buf[:min(len(buf), 60)], want)
}

func TestIDChild(t *testing.T) {
	// The test's goroutine is not goroutine 1, but its ID is the one in a
	// panic's dump; a new goroutine's is larger than its creator's.
	// A new goroutine's ID differs from its creator's. It need not be
	// larger: the runtime hands IDs out to each P in batches.
	parent := ID()
	var child, childSlow uint64
	done := make(chan struct{})
	go func() { child, childSlow = ID(), Slow(); close(done) }()
	<-done
	assert.NotEqual(t, parent, child, "a new goroutine's ID differs from its creator's")
	assert.Equal(t, childSlow, child, "the child's ID and its slow-path ID")
}

func TestParseHeader(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"goroutine 1 [running]:\n", 1},
		{"goroutine 18446744073709551615 [running]:", 1<<64 - 1},
		{"goroutine 18446744073709551616 [running]:", 0}, // overflows
		{"goroutine 123456789012345678901 [running]:", 0},
		{"goroutine 42 gp=0xc000002380 m=0 mp=0x7a3f20 [running]:", 42},
		{"goroutine 7", 0},  // cut before the space: could be 70
		{"goroutine 7 ", 7}, // the space ends the number
		{"goroutine  7 [", 0},
		{"goroutine x [", 0},
		{"goroutine -1 [", 0},
		{"Goroutine 1 [", 0},
		{"goroutine ", 0},
		{"", 0},
		{"gor", 0},
		{"goroutine 0012 [", 12},
	} {
		assert.Equal(t, tc.want, parseHeader([]byte(tc.in)), "parseHeader(%q)", tc.in)
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte("goroutine 1 [running]:\n"))
	f.Add([]byte("goroutine 99999999999999999999 ["))
	f.Fuzz(func(t *testing.T, b []byte) {
		id := parseHeader(b)
		require.False(t, id != 0 && !strings.HasPrefix(string(b), fmt.Sprintf("goroutine %d ", id)) && !strings.HasPrefix(string(b), "goroutine 0"),
			"parseHeader(%q) = %d", b, id)
	})
}

// TestVerifyRejects checks that the self-check refuses offsets whose word
// does not track the ID, and sample's distinctness rule.
func TestVerifyRejects(t *testing.T) {
	ps := sample()
	require.NotNil(t, ps, "sample failed")
	if !fastSupported {
		t.Skip("no fast path compiled in")
	}
	require.True(t, verify(ps, knownOffset), "known offset %d fails", knownOffset)
	n := 0
	for o := uintptr(0); o < 256; o += 8 {
		if verify(ps, o) {
			n++
		}
	}
	assert.Equal(t, 1, n, "offsets that verify")
	for _, o := range []uintptr{knownOffset + 4, 256, 1 << 20} {
		assert.False(t, verify(ps, o), "offset %d verifies", o)
	}
	// One goroutine whose word differs is enough to refuse.
	bad := append([]probe(nil), ps...)
	bad[3].reads[knownOffset/8]++
	assert.False(t, verify(bad, knownOffset), "a mismatch in one goroutine was accepted")
}

func TestSelfCheckDisabled(t *testing.T) {
	saved := [...]any{fast, available, off, status}
	defer func() {
		fast, available, off, status = saved[0].(bool), saved[1].(bool), saved[2].(uintptr), saved[3].(string)
	}()
	fast, available, off, status = false, false, 0, ""
	selfCheck(true)
	require.True(t, !fast && available && strings.Contains(status, "slow"), "disabled: fast=%v available=%v status=%q", fast, available, status)
	assert.Equal(t, Slow(), ID(), "the slow path's ID")
}

func TestIDAllocs(t *testing.T) {
	if !Fast() {
		t.Skip("slow path: allocations are runtime.Stack's")
	}
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = ID() }), "allocations per ID")
}

var sink uint64

func BenchmarkID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		sink += ID()
	}
}

func BenchmarkIDParallel(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var s uint64
		for pb.Next() {
			s += ID()
		}
		atomic.AddUint64(&sink, s)
	})
}

//go:noinline
func baseline() uint64 { return 1 }

// BenchmarkCall is a plain non-inlined call, for scale.
func BenchmarkCall(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		sink += baseline()
	}
}

func BenchmarkSlow(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		sink += Slow()
	}
}
