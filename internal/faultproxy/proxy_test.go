package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes every connection until the test ends, and can send n
// bytes on request: a client line "big\n" is answered with 256 KiB.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if bytes.Equal(buf[:n], []byte("big\n")) {
							_, _ = c.Write(bytes.Repeat([]byte("x"), 256<<10))
						} else {
							_, _ = c.Write(buf[:n])
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func newProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := New(echoServer(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes msg and reads it back, returning how long it took.
func roundTrip(t *testing.T, c net.Conn, msg string, deadline time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	_ = c.SetDeadline(start.Add(deadline))
	if _, err := c.Write([]byte(msg)); err != nil {
		return time.Since(start), err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	if err == nil {
		require.Equal(t, msg, string(buf), "echo")
	}
	return time.Since(start), err
}

func TestForwards(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	_, err := roundTrip(t, c, "hello", 5*time.Second)
	require.NoError(t, err)
	assert.EqualValues(t, 1, p.Conns(), "Conns")
	assert.EqualValues(t, 1, p.Accepted(), "Accepted")
}

func TestLatency(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	d, err := roundTrip(t, c, "warm", 5*time.Second)
	require.NoError(t, err)
	require.LessOrEqual(t, d, 100*time.Millisecond, "untoxic round trip")
	p.Set(Toxics{Latency: 100 * time.Millisecond})
	d, err = roundTrip(t, c, "slow", 5*time.Second)
	require.NoError(t, err)
	require.GreaterOrEqual(t, d, 200*time.Millisecond, "round trip with 100ms latency each way")
	p.Clear()
	d, err = roundTrip(t, c, "fast", 5*time.Second)
	require.NoError(t, err)
	assert.LessOrEqual(t, d, 150*time.Millisecond, "round trip after Clear")
}

func TestTimeoutDropsData(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	_, err := roundTrip(t, c, "warm", 5*time.Second)
	require.NoError(t, err)
	p.Set(Toxics{Timeout: true})
	d, err := roundTrip(t, c, "lost", 300*time.Millisecond)
	assert.Equal(t, int64(len("lost")), p.Dropped(), "bytes dropped")
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "read through a black hole: %v after %v, want a timeout", err, d)
	// The dropped bytes never arrive, even after the black hole ends.
	p.Clear()
	_, err = roundTrip(t, c, "back", 5*time.Second)
	require.NoError(t, err, "after Clear")
	assert.EqualValues(t, 1, p.Conns(), "the black hole closed the connection")
}

func TestTimeoutCloseAfter(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	_, err := roundTrip(t, c, "warm", 5*time.Second)
	require.NoError(t, err)
	p.Set(Toxics{Timeout: true, CloseAfter: 100 * time.Millisecond})
	d, err := roundTrip(t, c, "lost", 5*time.Second)
	require.Error(t, err, "the connection was not closed")
	require.True(t, d >= 90*time.Millisecond && d <= 3*time.Second, "read: %v after %v, want the connection closed after ~100ms", err, d)
	assert.NotErrorIs(t, err, syscall.ETIMEDOUT, "got a timeout, want EOF or reset")
}

func TestResetPeer(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	_, err := roundTrip(t, c, "warm", 5*time.Second)
	require.NoError(t, err)
	p.Set(Toxics{ResetPeer: true})
	_, err = roundTrip(t, c, "x", 5*time.Second)
	require.True(t, errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE), "open connection after ResetPeer: %v, want connection reset", err)
	// New connections are reset too: the reset can already reach the
	// dial (the kernel completes the handshake before the proxy accepts
	// and resets), or the first round trip.
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		t.Cleanup(func() { _ = c2.Close() })
		_, err = roundTrip(t, c2, "y", 5*time.Second)
	}
	require.True(t, errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE), "new connection under ResetPeer: %v, want reset", err)
	p.Clear()
	c3 := dial(t, p)
	_, err = roundTrip(t, c3, "z", 5*time.Second)
	require.NoError(t, err, "after Clear")
}

func TestBandwidth(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	p.Set(Toxics{Bandwidth: 512 << 10}) // 256 KiB takes ~0.5 s
	start := time.Now()
	_ = c.SetDeadline(start.Add(10 * time.Second))
	_, err := c.Write([]byte("big\n"))
	require.NoError(t, err)
	_, err = io.ReadFull(c, make([]byte, 256<<10))
	require.NoError(t, err)
	d := time.Since(start)
	assert.True(t, d >= 400*time.Millisecond && d <= 5*time.Second, "256 KiB at 512 KiB/s took %v, want ~500ms", d)
}

func TestCloseEndsEverything(t *testing.T) {
	p, err := New(echoServer(t))
	require.NoError(t, err)
	c := dial(t, p)
	_, err = roundTrip(t, c, "warm", 5*time.Second)
	require.NoError(t, err)
	p.Set(Toxics{Latency: time.Hour}) // a pipe goroutine now sleeps for an hour
	_, _ = c.Write([]byte("stuck"))
	done := make(chan struct{})
	go func() { _ = p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		require.FailNow(t, "Close did not return while a pipe slept in a latency toxic")
	}
	_, err = net.DialTimeout("tcp", p.Addr(), time.Second)
	assert.Error(t, err, "the proxy still accepts after Close")
	// goleak in TestMain checks that no goroutine of the proxy survived.
}
