// Package faultproxy is a TCP proxy for fault-injection tests, in the
// spirit of Shopify's toxiproxy but small enough to run inside a test
// process with no dependencies: it listens on 127.0.0.1, forwards every
// connection to an upstream address, and applies "toxics" that a test can
// switch on and off while connections are open.
//
// The toxics mirror toxiproxy's:
//
//   - Latency delays every chunk of data, in each direction.
//   - Bandwidth limits the server-to-client direction to n bytes per second.
//   - Timeout drops all data in both directions without closing anything,
//     like a network partition; with CloseAfter it also closes each
//     connection that long after the toxic reached it.
//   - ResetPeer aborts every connection, open or new, with a TCP RST.
//
// Every goroutine the proxy starts is stopped by Close, which waits for
// them, so tests can check for leaked goroutines afterwards.
package faultproxy

import (
	"net"
	"sync"
	"time"
)

// Toxics is the set of faults in effect. The zero value forwards data
// untouched.
type Toxics struct {
	// Latency is added to every chunk of data, in both directions, so a
	// round trip is delayed by twice Latency.
	Latency time.Duration
	// Bandwidth limits server-to-client traffic to this many bytes per
	// second; 0 means unlimited.
	Bandwidth int
	// Timeout drops every byte in both directions while it is set; the
	// connections stay open (a black hole).
	Timeout bool
	// CloseAfter, with Timeout, closes each connection this long after the
	// black hole reached it (toxiproxy's timeout toxic with a timeout).
	CloseAfter time.Duration
	// ResetPeer aborts every open connection with a TCP RST as soon as it is
	// set, and every new connection as soon as it is accepted.
	ResetPeer bool
}

// Proxy forwards TCP connections from a local listener to an upstream
// address, applying the current Toxics.
type Proxy struct {
	ln       net.Listener
	upstream string

	mu       sync.Mutex
	toxics   Toxics
	changed  chan struct{} // closed and replaced whenever the toxics change
	links    map[*link]struct{}
	accepted int
	dropped  int64 // bytes a Timeout toxic swallowed
	closed   bool
	done     chan struct{} // closed by Close
	wg       sync.WaitGroup
}

// New starts a proxy on a free port of 127.0.0.1 that forwards to upstream
// ("host:port").
func New(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		ln:       ln,
		upstream: upstream,
		changed:  make(chan struct{}),
		links:    make(map[*link]struct{}),
		done:     make(chan struct{}),
	}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the address the proxy listens on, "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port returns the port the proxy listens on.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Set replaces the toxics in effect. ResetPeer and Timeout apply to open
// connections at once.
func (p *Proxy) Set(t Toxics) {
	p.mu.Lock()
	p.toxics = t
	close(p.changed)
	p.changed = make(chan struct{})
	var reset []*link
	if t.ResetPeer {
		for l := range p.links {
			reset = append(reset, l)
		}
	}
	p.mu.Unlock()
	for _, l := range reset {
		l.abort()
	}
}

// Clear removes every toxic.
func (p *Proxy) Clear() { p.Set(Toxics{}) }

// Conns returns the number of proxied connections open now.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Accepted returns the number of connections accepted so far.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Dropped returns how many bytes Timeout toxics have swallowed so far.
func (p *Proxy) Dropped() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

// Close stops accepting, closes every proxied connection and waits for all
// of the proxy's goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, l := range links {
		l.close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) current() (Toxics, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.toxics, p.changed
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		server, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
		if err != nil {
			_ = client.Close()
			continue
		}
		l := &link{p: p, client: client, server: server, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = client.Close()
			_ = server.Close()
			return
		}
		p.accepted++
		p.links[l] = struct{}{}
		reset := p.toxics.ResetPeer
		p.wg.Add(3)
		p.mu.Unlock()
		go l.pipe(server, client, false)
		go l.pipe(client, server, true)
		go l.watch()
		if reset {
			l.abort()
		}
	}
}

// link is one proxied connection.
type link struct {
	p              *Proxy
	client, server net.Conn
	once           sync.Once
	done           chan struct{}
}

// close closes both sides (with FIN) and forgets the link.
func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		_ = l.client.Close()
		_ = l.server.Close()
		l.p.mu.Lock()
		delete(l.p.links, l)
		l.p.mu.Unlock()
	})
}

// abort closes both sides with an RST instead of a FIN.
func (l *link) abort() {
	for _, c := range []net.Conn{l.client, l.server} {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	l.close()
}

// sleep waits for d unless the link closes first; it reports whether the
// link is still open.
func (l *link) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.done:
		return false
	}
}

// watch implements CloseAfter: it closes the link that long after a black
// hole with CloseAfter reached it.
func (l *link) watch() {
	defer l.p.wg.Done()
	for {
		tox, changed := l.p.current()
		var expire <-chan time.Time
		var t *time.Timer
		if tox.Timeout && tox.CloseAfter > 0 {
			t = time.NewTimer(tox.CloseAfter)
			expire = t.C
		}
		select {
		case <-l.done:
		case <-changed:
		case <-expire:
			l.close()
		}
		if t != nil {
			t.Stop()
		}
		select {
		case <-l.done:
			return
		default:
		}
	}
}

// pipe copies src to dst under the toxics in effect when each chunk
// arrives. down is the server-to-client direction.
func (l *link) pipe(dst, src net.Conn, down bool) {
	defer l.p.wg.Done()
	defer l.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			tox, _ := l.p.current()
			if tox.Timeout {
				l.p.mu.Lock()
				l.p.dropped += int64(n)
				l.p.mu.Unlock()
			} else if !l.forward(dst, buf[:n], tox, down) {
				return
			}
		}
		if err != nil {
			return // EOF, reset or closed: end the whole link
		}
	}
}

func (l *link) forward(dst net.Conn, b []byte, tox Toxics, down bool) bool {
	if !l.sleep(tox.Latency) {
		return false
	}
	if !down || tox.Bandwidth <= 0 {
		_, err := dst.Write(b)
		return err == nil
	}
	// Send in slices of a twentieth of a second's worth of data.
	slice := max(tox.Bandwidth/20, 1)
	for len(b) > 0 {
		n := min(slice, len(b))
		if _, err := dst.Write(b[:n]); err != nil {
			return false
		}
		b = b[n:]
		if !l.sleep(time.Duration(n) * time.Second / time.Duration(tox.Bandwidth)) {
			return false
		}
	}
	return true
}
