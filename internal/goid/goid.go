package goid

import (
	"os"
	"runtime"
	"strconv"
	"sync"
)

// Fast reports whether ID reads the runtime's g directly (verified at
// init), and so costs a few nanoseconds without allocating.
func Fast() bool { return fast }

// Available reports whether ID returns real goroutine IDs, by either path.
// When false, ID always returns 0.
func Available() bool { return available }

// Slow returns the calling goroutine's ID parsed from runtime.Stack's
// header, or 0 if that header cannot be parsed. It is the reference ID
// checks against; it costs about a microsecond.
func Slow() uint64 { return slowID() }

// Status describes the path ID takes and why, for reports and logs; for
// example "fast: runtime.g+152 (verified on 9 goroutines)" or "slow:
// self-check failed at runtime.g+152".
func Status() string { return status }

// Offset returns the byte offset of the goid field in runtime.g that the
// fast path reads, or -1 when the fast path is off.
func Offset() int {
	if !fast {
		return -1
	}
	return int(off)
}

var (
	fast      bool    // set once by init, read-only afterwards
	available bool    // set once by init
	off       uintptr // offset of g.goid; valid when fast
	status    string
)

// slowID parses "goroutine N [" (or "goroutine N gp=..." under
// GOTRACEBACK=system) from the start of runtime.Stack's output for the
// current goroutine.
func slowID() uint64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	return parseHeader(buf[:n])
}

// parseHeader returns N from a buffer that starts "goroutine N " or 0.
func parseHeader(b []byte) uint64 {
	const prefix = "goroutine "
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return 0
	}
	b = b[len(prefix):]
	var id uint64
	i := 0
	for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
		if i >= 20 { // more digits than a uint64 holds
			return 0
		}
		d := uint64(b[i] - '0')
		if id > (^uint64(0)-d)/10 {
			return 0
		}
		id = id*10 + d
	}
	if i == 0 || i == len(b) || b[i] != ' ' {
		return 0 // no digits, or the header was cut short
	}
	return id
}

func init() {
	selfCheck(os.Getenv("PGXLEAK_GOID") == "0")
}

// checkGoroutines is how many goroutines besides the initialising one the
// self-check compares the two paths on.
const checkGoroutines = 8

// selfCheck decides fast, off, available and status. It compares the slow
// path with the fast one at the offset known for this Go version, then,
// if that fails, at every 8-byte slot of the first 256 bytes of g.
func selfCheck(disabled bool) {
	ids := sample()
	available = ids != nil
	if !available {
		status = "unavailable: cannot parse runtime.Stack's goroutine header"
		return
	}
	switch {
	case !fastSupported:
		status = "slow: " + unsupportedReason
		return
	case disabled:
		status = "slow: disabled by PGXLEAK_GOID=0"
		return
	}
	if verify(ids, knownOffset) {
		fast, off = true, knownOffset
		status = "fast: runtime.g+" + strconv.Itoa(int(off)) + " (verified on " + strconv.Itoa(len(ids)) + " goroutines)"
		return
	}
	for o := uintptr(0); o < 256; o += 8 {
		if o != knownOffset && verify(ids, o) {
			fast, off = true, o
			status = "fast: runtime.g+" + strconv.Itoa(int(off)) + " (found and verified on " + strconv.Itoa(len(ids)) + " goroutines; expected +" + strconv.Itoa(int(knownOffset)) + " for this Go version)"
			return
		}
	}
	status = "slow: self-check failed at runtime.g+" + strconv.Itoa(int(knownOffset)) + " and at every other slot"
}

// probe is one goroutine's two readings.
type probe struct {
	slow  uint64
	reads [32]uint64 // load(o) for o = 0, 8, ..., 248
}

// sample returns the readings of the current goroutine and of
// checkGoroutines others, or nil if the slow path fails or the IDs it
// gives are not distinct.
func sample() []probe {
	ps := make([]probe, checkGoroutines+1)
	read := func(p *probe) {
		p.slow = slowID()
		if fastSupported {
			for i := range p.reads {
				p.reads[i] = load(uintptr(i) * 8)
			}
		}
	}
	read(&ps[0])
	var wg sync.WaitGroup
	for i := 1; i < len(ps); i++ {
		wg.Add(1)
		go func(p *probe) {
			defer wg.Done()
			read(p)
		}(&ps[i])
	}
	wg.Wait()
	seen := make(map[uint64]bool, len(ps))
	for _, p := range ps {
		if p.slow == 0 || seen[p.slow] {
			return nil
		}
		seen[p.slow] = true
	}
	return ps
}

// verify reports whether the word at offset o equals the slow-path ID in
// every sampled goroutine.
func verify(ps []probe, o uintptr) bool {
	if o%8 != 0 || o/8 >= uintptr(len(ps[0].reads)) {
		return false
	}
	for _, p := range ps {
		if p.reads[o/8] != p.slow {
			return false
		}
	}
	return true
}
