package goid

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestStatus(t *testing.T) {
	t.Logf("status: %s (fast=%v available=%v offset=%d, %s/%s %s)", Status(), Fast(), Available(), Offset(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	if !Available() {
		t.Fatalf("slow path unavailable: %s", Status())
	}
	wantFast := fastSupported
	if Fast() != wantFast {
		t.Fatalf("Fast() = %v, want %v on %s (status %q)", Fast(), wantFast, runtime.GOARCH, Status())
	}
	if Fast() {
		if Offset() != int(knownOffset) {
			t.Errorf("offset %d, but %d is the known offset for %s", Offset(), knownOffset, runtime.Version())
		}
		if !strings.HasPrefix(Status(), "fast: ") {
			t.Errorf("status %q", Status())
		}
	} else if Offset() != -1 || !strings.HasPrefix(Status(), "slow: ") {
		t.Errorf("offset %d status %q", Offset(), Status())
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
		t.Error(e)
	}
	seen := map[uint64]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("ID %d seen twice", id)
		}
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
	if want := fmt.Sprintf("goroutine %d [running]:\n", id); !strings.HasPrefix(string(buf), want) {
		t.Fatalf("dump starts %q, want %q", buf[:min(len(buf), 60)], want)
	}
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
	if child == parent || child != childSlow {
		t.Fatalf("child %d (slow %d), parent %d", child, childSlow, parent)
	}
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
		if got := parseHeader([]byte(tc.in)); got != tc.want {
			t.Errorf("parseHeader(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte("goroutine 1 [running]:\n"))
	f.Add([]byte("goroutine 99999999999999999999 ["))
	f.Fuzz(func(t *testing.T, b []byte) {
		id := parseHeader(b)
		if id != 0 && !strings.HasPrefix(string(b), fmt.Sprintf("goroutine %d ", id)) && !strings.HasPrefix(string(b), "goroutine 0") {
			t.Fatalf("parseHeader(%q) = %d", b, id)
		}
	})
}

// TestVerifyRejects checks that the self-check refuses offsets whose word
// does not track the ID, and sample's distinctness rule.
func TestVerifyRejects(t *testing.T) {
	ps := sample()
	if ps == nil {
		t.Fatal("sample failed")
	}
	if !fastSupported {
		t.Skip("no fast path compiled in")
	}
	if !verify(ps, knownOffset) {
		t.Fatalf("known offset %d fails", knownOffset)
	}
	n := 0
	for o := uintptr(0); o < 256; o += 8 {
		if verify(ps, o) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d offsets verify, want exactly 1", n)
	}
	for _, o := range []uintptr{knownOffset + 4, 256, 1 << 20} {
		if verify(ps, o) {
			t.Errorf("offset %d verifies", o)
		}
	}
	// One goroutine whose word differs is enough to refuse.
	bad := append([]probe(nil), ps...)
	bad[3].reads[knownOffset/8]++
	if verify(bad, knownOffset) {
		t.Error("a mismatch in one goroutine was accepted")
	}
}

func TestSelfCheckDisabled(t *testing.T) {
	saved := [...]any{fast, available, off, status}
	defer func() {
		fast, available, off, status = saved[0].(bool), saved[1].(bool), saved[2].(uintptr), saved[3].(string)
	}()
	fast, available, off, status = false, false, 0, ""
	selfCheck(true)
	if fast || !available || !strings.Contains(status, "slow") {
		t.Fatalf("disabled: fast=%v available=%v status=%q", fast, available, status)
	}
	if got, want := ID(), Slow(); got != want {
		t.Fatalf("slow ID %d, want %d", got, want)
	}
}

func TestIDAllocs(t *testing.T) {
	if !Fast() {
		t.Skip("slow path: allocations are runtime.Stack's")
	}
	if a := testing.AllocsPerRun(1000, func() { _ = ID() }); a != 0 {
		t.Fatalf("ID allocates %v times", a)
	}
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
