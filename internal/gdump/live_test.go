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
			g := s.Lookup(id)
			t.Fatalf("goroutine %d never reached %q: %+v", id, state, g)
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
		if g.Locked != c.locked {
			t.Errorf("goroutine %d: Locked = %v", g.ID, g.Locked)
		}
		u, ok := g.UserFrame(func(f Frame) bool { return !strings.HasPrefix(f.Function, "github.com/pgxleak/") })
		if !ok || u.Line != c.r.line || !strings.HasSuffix(u.File, "/live_test.go") {
			t.Errorf("%s: user frame %v, want live_test.go:%d\n%+v", c.state, u, c.r.line, g.Frames)
		}
		if g.CreatorID != me || !strings.HasSuffix(g.CreatedBy.File, "live_test.go") {
			t.Errorf("%s: created by %v in %d, want in %d", c.state, g.CreatedBy, g.CreatorID, me)
		}
		if g.Wait != 0 || g.Truncated {
			t.Errorf("%s: %+v", c.state, g)
		}
	}
	s := Take(0)
	if g := s.Lookup(me); g == nil || g.State != "running" || s.Goroutines[0].ID != me {
		t.Errorf("the current goroutine: %+v", g)
	}
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
		if !ok || !g.WaitingOn(w.db) || g.WaitingOn(other) {
			t.Errorf("goroutine %d: WaitingDB = %#x, %v; db %p, other %p; frame %+v", g.ID, addr, ok, w.db, other, f)
		}
		if words := f.ArgWords(); len(words) == 0 || words[0] != fmt.Sprintf("%p", w.db) {
			t.Errorf("goroutine %d: args %q, want first %p", g.ID, words, w.db)
		}
		u, ok := g.UserFrame(func(f Frame) bool { return !strings.HasSuffix(f.File, "/live_test.go") })
		if !ok || u.Line != w.line {
			t.Errorf("goroutine %d: user frame %v, want line %d", g.ID, u, w.line)
		}
	}
	// Goroutines that are not waiting for a connection are not reported.
	n := 0
	for i := range s.Goroutines {
		if s.Goroutines[i].WaitingForConn() {
			n++
		}
	}
	if n != 4 {
		t.Errorf("%d goroutines waiting, want 4", n)
	}
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
	if full.Truncated || len(full.Goroutines) < 200 {
		t.Fatalf("full: truncated %v, %d goroutines", full.Truncated, len(full.Goroutines))
	}
	s := Take(4096)
	if !s.Truncated || s.Size != 4096 || len(s.Goroutines) == 0 || !s.Goroutines[len(s.Goroutines)-1].Truncated {
		t.Fatalf("bounded: truncated %v size %d, %d goroutines", s.Truncated, s.Size, len(s.Goroutines))
	}
	for _, g := range s.Goroutines[:len(s.Goroutines)-1] {
		if g.Truncated {
			t.Errorf("goroutine %d truncated", g.ID)
		}
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
	if s.Truncated || len(s.Goroutines) < 2000 || s.Attempts < 2 {
		t.Fatalf("truncated %v, %d goroutines, %d attempts, %d bytes", s.Truncated, len(s.Goroutines), s.Attempts, s.Size)
	}
	if s2 := Take(0); s2.Attempts != 1 {
		t.Errorf("second take: %d attempts", s2.Attempts)
	}
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
	if l.Dumps() != 1 {
		t.Fatalf("%d dumps for a storm of 100", l.Dumps())
	}
	for _, s := range snaps {
		if s != snaps[0] {
			t.Fatal("callers got different snapshots")
		}
	}
	clock.Lock()
	now = now.Add(999 * time.Millisecond)
	clock.Unlock()
	if _, fresh := l.Take(); fresh || l.Dumps() != 1 {
		t.Fatal("dumped again within the interval")
	}
	clock.Lock()
	now = now.Add(time.Millisecond)
	clock.Unlock()
	if s, fresh := l.Take(); !fresh || l.Dumps() != 2 || s == snaps[0] || l.Last() != s {
		t.Fatal("no new dump after the interval")
	}
	var zero Limiter
	if _, fresh := zero.Take(); !fresh {
		t.Fatal("zero Limiter")
	}
	if _, fresh := zero.Take(); fresh {
		t.Fatal("zero Limiter: no default interval")
	}
}
