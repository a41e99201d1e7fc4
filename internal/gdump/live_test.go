package gdump

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgxleak/pgxleak/internal/goid"
)

// here returns the caller's line.
func here() int {
	_, _, line, _ := runtime.Caller(1)
	return line
}

func waitState(t *testing.T, id uint64, state string) *Goroutine {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := Take(0)
		if g := s.Lookup(id); g != nil && g.State == state {
			return g
		}
		if time.Now().After(deadline) {
			require.FailNowf(t, "timed out", "goroutine %d never reached %q: %+v", id, state, s.Lookup(id))
		}
		runtime.Gosched()
	}
}

func TestLiveStates(t *testing.T) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	var mu sync.Mutex
	mu.Lock() // unlocked at stop, by the goroutine below
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()

	type result struct {
		id   uint64
		line int
	}
	start := func(f func(ready chan<- result)) result {
		ready := make(chan result, 1)
		wg.Add(1)
		go func() { defer wg.Done(); f(ready) }()
		return <-ready
	}
	cases := []struct {
		state  string
		locked bool
		r      result
	}{
		{state: "chan receive", r: start(func(ready chan<- result) {
			ready <- result{goid.ID(), here() + 1}
			<-stop
		})},
		{state: "select", r: start(func(ready chan<- result) {
			c := make(chan int)
			ready <- result{goid.ID(), here() + 1}
			select {
			case <-stop:
			case <-c:
			}
		})},
		{state: "sync.Mutex.Lock", r: start(func(ready chan<- result) {
			go func() { <-stop; mu.Unlock() }()
			ready <- result{goid.ID(), here() + 1}
			mu.Lock()
			//lint:ignore SA2001 the goroutine must block on Lock; it holds nothing after
			mu.Unlock()
		})},
		{state: "IO wait", r: start(func(ready chan<- result) {
			go func() { <-stop; ln.Close() }()
			ready <- result{goid.ID(), here() + 1}
			c, err := ln.Accept()
			if err == nil {
				c.Close()
			}
		})},
		{state: "chan receive", locked: true, r: start(func(ready chan<- result) { // a one-case select is a receive
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			ready <- result{goid.ID(), here() + 3} // the case's line
			//lint:ignore S1000 the test is that a one-case select shows as a receive
			select {
			case <-stop:
			}
		})},
		{state: "sync.WaitGroup.Wait", r: start(func(ready chan<- result) {
			var w sync.WaitGroup
			w.Add(1)
			go func() { <-stop; w.Done() }()
			ready <- result{goid.ID(), here() + 1}
			w.Wait()
		})},
	}
	me := goid.ID()
	for _, c := range cases {
		g := waitState(t, c.r.id, c.state)
		assert.Equal(t, c.locked, g.Locked, "goroutine %d: Locked", g.ID)
		u, ok := g.UserFrame(func(f Frame) bool { return !strings.HasPrefix(f.Function, "github.com/pgxleak/") })
		assert.True(t, ok && u.Line == c.r.line && strings.HasSuffix(u.File, "/live_test.go"),
			"%s: user frame %v, want live_test.go:%d\n%+v", c.state, u, c.r.line, g.Frames)
		assert.Equal(t, me, g.CreatorID, "%s: creator", c.state)
		assert.True(t, strings.HasSuffix(g.CreatedBy.File, "live_test.go"), "%s: created by %v", c.state, g.CreatedBy)
		assert.Zero(t, g.Wait, c.state)
		assert.False(t, g.Truncated, c.state)
	}
	s := Take(0)
	g := s.Lookup(me)
	if assert.NotNil(t, g, "the current goroutine") {
		assert.Equal(t, "running", g.State, "the current goroutine")
	}
	assert.Equal(t, me, s.Goroutines[0].ID, "the current goroutine comes first")
	// An exited goroutine is absent.
	done := make(chan uint64)
	go func() { done <- goid.ID() }()
	gone := <-done
	for s := Take(0); s.Lookup(gone) != nil; s = Take(0) {
		runtime.Gosched()
	}
}

// A minimal driver: connections that do nothing.
type fakeDriver struct{}
type fakeConn struct{}

func (fakeDriver) Open(string) (driver.Conn, error)  { return fakeConn{}, nil }
func (fakeConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("no statements") }
func (fakeConn) Close() error                        { return nil }
func (fakeConn) Begin() (driver.Tx, error)           { return nil, errors.New("no transactions") }

var registerOnce sync.Once

func openPool(t *testing.T, max int) *sql.DB {
	registerOnce.Do(func() { sql.Register("gdump-fake", fakeDriver{}) })
	db, err := sql.Open("gdump-fake", "")
	require.NoError(t, err)
	db.SetMaxOpenConns(max)
	t.Cleanup(func() { db.Close() })
	return db
}

// TestWaitingForConn blocks goroutines on two exhausted pools, with a
// Background and a cancellable context, and checks that each is
// recognised as waiting, on the right *sql.DB, at the right line.
func TestWaitingForConn(t *testing.T) {
	dbA, dbB := openPool(t, 1), openPool(t, 1)
	ctx := context.Background()
	holdA, err := dbA.Conn(ctx)
	require.NoError(t, err)
	holdB, err := dbB.Conn(ctx)
	require.NoError(t, err)
	cctx, cancel := context.WithCancel(ctx)
	type waiter struct {
		id   uint64
		line int
		db   *sql.DB
	}
	ready := make(chan waiter)
	var wg sync.WaitGroup
	wait := func(db *sql.DB, ctx context.Context) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready <- waiter{goid.ID(), here() + 1, db}
			c, err := db.Conn(ctx)
			if err == nil {
				c.Close()
			}
		}()
	}
	wait(dbA, ctx)
	wait(dbA, cctx)
	wait(dbB, ctx)
	wait(dbB, cctx)
	var ws []waiter
	for range 4 {
		ws = append(ws, <-ready)
	}
	// Wait until all four are counted as waiting by database/sql.
	for dbA.Stats().WaitCount+dbB.Stats().WaitCount < 4 {
		runtime.Gosched()
	}
	var s *Snapshot
	for {
		s = Take(0)
		n := 0
		for _, w := range ws {
			if g := s.Lookup(w.id); g != nil && g.WaitingForConn() {
				n++
			}
		}
		if n == len(ws) {
			break
		}
		runtime.Gosched()
	}
	for _, w := range ws {
		g := s.Lookup(w.id)
		other := dbA
		if w.db == dbA {
			other = dbB
		}
		f, _ := g.ConnWaitFrame()
		addr, ok := g.WaitingDB()
		assert.True(t, ok && g.WaitingOn(w.db) && !g.WaitingOn(other),
			"goroutine %d: WaitingDB = %#x, %v; db %p, other %p; frame %+v", g.ID, addr, ok, w.db, other, f)
		words := f.ArgWords()
		if assert.NotEmpty(t, words, "goroutine %d: args", g.ID) {
			assert.Equal(t, fmt.Sprintf("%p", w.db), words[0], "goroutine %d: the first argument is the *DB", g.ID)
		}
		u, ok := g.UserFrame(func(f Frame) bool { return !strings.HasSuffix(f.File, "/live_test.go") })
		assert.True(t, ok, "goroutine %d: no user frame", g.ID)
		assert.Equal(t, w.line, u.Line, "goroutine %d: user frame %v", g.ID, u)
	}
	// Goroutines that are not waiting for a connection are not reported.
	n := 0
	for i := range s.Goroutines {
		if s.Goroutines[i].WaitingForConn() {
			n++
		}
	}
	assert.Equal(t, 4, n, "goroutines waiting")
	cancel()
	holdA.Close()
	holdB.Close()
	wg.Wait()
}

func TestTakeTruncated(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	for range 200 {
		go func() { <-stop }()
	}
	full := Take(0)
	require.False(t, full.Truncated, "full dump truncated")
	require.GreaterOrEqual(t, len(full.Goroutines), 200)
	s := Take(4096)
	require.True(t, s.Truncated, "bounded dump not truncated")
	require.Equal(t, 4096, s.Size)
	require.NotEmpty(t, s.Goroutines)
	require.True(t, s.Goroutines[len(s.Goroutines)-1].Truncated, "the last goroutine of a bounded dump is truncated")
	for _, g := range s.Goroutines[:len(s.Goroutines)-1] {
		assert.False(t, g.Truncated, "goroutine %d truncated", g.ID)
	}
}

// TestTakeGrows starts with a stale small size estimate and checks that
// the buffer grows until the dump fits.
func TestTakeGrows(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	for range 2000 {
		go func() { deepPark(20, stop) }()
	}
	lastSize.Store(0)
	s := Take(0)
	require.False(t, s.Truncated, "%d bytes", s.Size)
	require.GreaterOrEqual(t, len(s.Goroutines), 2000)
	require.GreaterOrEqual(t, s.Attempts, 2, "the first take grows its buffer")
	assert.Equal(t, 1, Take(0).Attempts, "the second take starts at the size that fitted")
}

//go:noinline
func deepPark(n int, stop chan struct{}) {
	if n == 0 {
		<-stop
		return
	}
	deepPark(n-1, stop)
}

func TestLimiterStorm(t *testing.T) {
	now := time.Unix(1000, 0)
	var clock sync.Mutex
	l := &Limiter{Interval: time.Second}
	l.now = func() time.Time { clock.Lock(); defer clock.Unlock(); return now }
	var wg sync.WaitGroup
	snaps := make([]*Snapshot, 100)
	for i := range snaps {
		wg.Add(1)
		go func() { defer wg.Done(); snaps[i], _ = l.Take() }()
	}
	wg.Wait()
	require.EqualValues(t, 1, l.Dumps(), "dumps for a storm of 100")
	for _, s := range snaps {
		require.Same(t, snaps[0], s, "callers got different snapshots")
	}
	clock.Lock()
	now = now.Add(999 * time.Millisecond)
	clock.Unlock()
	_, fresh := l.Take()
	require.False(t, fresh, "dumped again within the interval")
	require.EqualValues(t, 1, l.Dumps(), "dumped again within the interval")
	clock.Lock()
	now = now.Add(time.Millisecond)
	clock.Unlock()
	s, fresh := l.Take()
	require.True(t, fresh, "no new dump after the interval")
	require.EqualValues(t, 2, l.Dumps(), "no new dump after the interval")
	require.NotSame(t, snaps[0], s, "no new dump after the interval")
	require.Same(t, s, l.Last())
	var zero Limiter
	_, fresh = zero.Take()
	require.True(t, fresh, "zero Limiter")
	_, fresh = zero.Take()
	require.False(t, fresh, "zero Limiter: no default interval")
}
