package gdump

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// MaxBytes is the default bound on a dump's text: 64 MiB, about 100,000
// goroutines with short stacks.
const MaxBytes = 64 << 20

// Snapshot is one parsed goroutine dump. It is shared by every caller a
// Limiter hands it to: treat it as read-only.
type Snapshot struct {
	Goroutines []Goroutine
	Started    time.Time     // before the first runtime.Stack call: a goroutine started or changed later may not show it
	Taken      time.Time     // when the dump was taken (end of runtime.Stack)
	Took       time.Duration // runtime.Stack calls (stop-the-world) and parsing
	Size       int           // bytes of dump text
	// Truncated is set when the dump did not fit in the bound given to
	// Take: the goroutines printed last are missing, and the last one
	// present may be partial (its Truncated is set). A goroutine absent
	// from a truncated snapshot may still be alive.
	Truncated bool
	// Attempts counts runtime.Stack calls: each one that fills its
	// buffer is retried with one twice as large.
	Attempts int

	once sync.Once
	byID map[uint64]int
}

// Lookup returns the goroutine with the given ID, or nil if the dump has
// none: it had exited when the dump was taken (IDs are never reused),
// or, if Truncated, it was cut off.
func (s *Snapshot) Lookup(id uint64) *Goroutine {
	s.once.Do(func() {
		s.byID = make(map[uint64]int, len(s.Goroutines))
		for i := range s.Goroutines {
			s.byID[s.Goroutines[i].ID] = i
		}
	})
	i, ok := s.byID[id]
	if !ok {
		return nil
	}
	return &s.Goroutines[i]
}

// lastSize remembers the size of the previous dump, to size the next
// buffer in one attempt.
var lastSize atomic.Int64

// Take dumps all goroutines with runtime.Stack(buf, true) and parses the
// dump. It grows the buffer (doubling, starting from an estimate) until
// the dump fits or maxBytes is reached; maxBytes <= 0 means MaxBytes.
//
// Each runtime.Stack call stops the world for as long as it prints: about
// a millisecond per few thousand goroutines. Take from a background
// goroutine, rate-limited (Limiter), never on a request path.
func Take(maxBytes int) *Snapshot {
	if maxBytes <= 0 {
		maxBytes = MaxBytes
	}
	start := time.Now()
	size := int(lastSize.Load()) * 5 / 4
	if est := runtime.NumGoroutine() * 256; est > size { // ~270 bytes each, parked with a short stack
		size = est
	}
	size = max(size, 64<<10)
	size = min(size, maxBytes)
	s := &Snapshot{}
	var buf []byte
	var n int
	for {
		buf = make([]byte, size)
		n = runtime.Stack(buf, true)
		s.Attempts++
		if n < len(buf) {
			break
		}
		if size >= maxBytes {
			s.Truncated = true
			break
		}
		size = min(size*2, maxBytes)
	}
	s.Started, s.Taken = start, time.Now()
	lastSize.Store(int64(n))
	s.Size = n
	var text string
	if n > 0 {
		if n >= len(buf)/4*3 {
			text = unsafe.String(&buf[0], n) // buf is never written again
		} else {
			text = string(buf[:n]) // let the oversized buffer go
		}
	}
	s.Goroutines = Parse(text)
	if s.Truncated && len(s.Goroutines) > 0 {
		// Cut exactly at a line end, the text does not show the cut.
		s.Goroutines[len(s.Goroutines)-1].Truncated = true
	}
	s.Took = time.Since(start)
	return s
}

// Limiter takes at most one dump per Interval and hands the previous one
// to callers in between, so that a storm of reports takes one dump. It is
// safe for concurrent use; callers that arrive while a dump is being
// taken wait for it and share it. The zero value is usable, with an
// Interval of one second and MaxBytes.
type Limiter struct {
	Interval time.Duration // minimum time between dumps; <= 0 means 1s
	MaxBytes int           // bound passed to Take; <= 0 means MaxBytes

	mu    sync.Mutex
	last  *Snapshot
	dumps atomic.Uint64
	now   func() time.Time // for tests
}

// Forget drops the last snapshot, so that it can be collected; the next
// Take takes a new one.
func (l *Limiter) Forget() {
	l.mu.Lock()
	l.last = nil
	l.mu.Unlock()
}

// Take returns a snapshot no older than Interval, taking a new one only
// when the previous one is older than that. fresh reports whether this
// call took it.
func (l *Limiter) Take() (s *Snapshot, fresh bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now
	if l.now != nil {
		now = l.now
	}
	interval := l.Interval
	if interval <= 0 {
		interval = time.Second
	}
	if l.last != nil && now().Sub(l.last.Taken) < interval {
		return l.last, false
	}
	s = Take(l.MaxBytes)
	if l.now != nil {
		s.Taken = l.now()
	}
	l.last = s
	l.dumps.Add(1)
	return s, true
}

// Last returns the most recent snapshot without taking one, or nil.
func (l *Limiter) Last() *Snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// Dumps returns how many dumps this Limiter has taken.
func (l *Limiter) Dumps() uint64 { return l.dumps.Load() }
