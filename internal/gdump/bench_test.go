package gdump

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// park10k starts n goroutines parked on a channel receive and returns a
// function that releases them.
func parkN(b *testing.B, n int) func() {
	stop := make(chan struct{})
	started := make(chan struct{}, n)
	for range n {
		go func() { started <- struct{}{}; <-stop }()
	}
	for range n {
		<-started
	}
	runtime.GC()
	return func() { close(stop) }
}

// BenchmarkTake10k is a dump (runtime.Stack, stop-the-world) and parse of
// 10,000 goroutines parked on a channel, plus the test's own.
func BenchmarkTake10k(b *testing.B) {
	defer parkN(b, 10000)()
	Take(0) // size the buffer
	b.ReportAllocs()
	var s *Snapshot
	for b.Loop() {
		s = Take(0)
	}
	b.ReportMetric(float64(s.Size), "dump-bytes")
	b.ReportMetric(float64(len(s.Goroutines)), "goroutines")
	require.GreaterOrEqual(b, len(s.Goroutines), 10000)
	require.False(b, s.Truncated)
}

// BenchmarkStack10k is runtime.Stack alone, for the split between the
// runtime's formatting and Parse.
func BenchmarkStack10k(b *testing.B) {
	defer parkN(b, 10000)()
	buf := make([]byte, 16<<20)
	b.ReportAllocs()
	for b.Loop() {
		if runtime.Stack(buf, true) == len(buf) {
			b.Fatal("buffer too small")
		}
	}
}

// BenchmarkParse10k is Parse alone on a dump of 10,000 parked goroutines.
func BenchmarkParse10k(b *testing.B) {
	release := parkN(b, 10000)
	buf := make([]byte, 16<<20)
	text := string(buf[:runtime.Stack(buf, true)])
	release()
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if gs := Parse(text); len(gs) < 10000 {
			b.Fatal(len(gs))
		}
	}
}

// BenchmarkLimiterCached is a Limiter's answer within its interval.
func BenchmarkLimiterCached(b *testing.B) {
	var l Limiter
	l.Interval = 1 << 62
	l.Take()
	b.ReportAllocs()
	for b.Loop() {
		l.Take()
	}
}
