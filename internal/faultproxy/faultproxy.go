// Package faultproxy is a TCP proxy for tests that puts network faults
// between a client and a server: the client dials the proxy's Addr, the
// proxy dials the target for each connection and copies bytes both ways
// until told to fail.
//
// Two faults, each lasting until Heal:
//
//   - Cut: the server's host is gone. Every current connection is reset
//     (both ends get an RST), and every new connection is accepted and reset
//     at once, so clients see "connection reset" quickly instead of hanging.
//   - Stall: a black hole. Connections stay open, but no byte and no close
//     is delivered in either direction, so a client's reads hang until its
//     own timeout. New connections are accepted (the kernel completes the
//     handshake) but reach the target only after Heal.
//
// Heal ends either fault. After a Cut, new connections work again (the cut
// ones stay closed). After a Stall, forwarding resumes on the connections
// that are still open: the bytes sent during the stall are then delivered,
// late and in order, as TCP retransmission would deliver them when a
// partition heals. A peer that gave up during the stall has closed its end;
// the proxy closes the other end once it reads that close, after delivering
// what was sent before it. So a request whose client timed out may still
// reach the server after Heal, exactly as on a real network.
//
// A Proxy is safe for concurrent use. Close stops it and waits for every
// goroutine it started.
package faultproxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// dialTimeout bounds dialling the target for one connection.
const dialTimeout = 5 * time.Second

type mode int

const (
	modeOK mode = iota
	modeCut
	modeStall
)

// Proxy forwards TCP connections from Addr to a target, with faults on
// demand. Create it with New.
type Proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // the accept loop, every connection's goroutines

	mu    sync.Mutex
	mode  mode
	gate  chan struct{} // closed while bytes may flow; open (blocking) during a stall
	links map[*link]struct{}
	shut  bool
	// closed is closed by Close, ending every wait at the gate.
	closed chan struct{}
}

// link is one proxied connection: the client's and the target's ends.
type link struct {
	client, server net.Conn
	done           chan struct{} // closed when the link is closed
	once           sync.Once
}

// New starts a proxy on a free loopback port forwarding to target
// (host:port). Stop it with Close.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	gate := make(chan struct{})
	close(gate)
	p := &Proxy{ln: ln, target: target, gate: gate, links: map[*link]struct{}{}, closed: make(chan struct{})}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the host:port clients dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut resets every current connection and resets new ones at once, until
// Heal. Cutting while stalled turns the stall into a cut.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shut {
		return
	}
	p.mode = modeCut
	p.openGate()
	// A reset link forwards nothing more: it leaves the count now, not
	// once its goroutines have wound down.
	for l := range p.links {
		l.close(true)
		delete(p.links, l)
	}
}

// Stall stops delivering bytes (and closes) in both directions on every
// connection, current and new, until Heal; connections stay open. A chunk
// the proxy is writing at the moment Stall is called may still arrive;
// nothing read after it does.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shut || p.mode == modeStall {
		return
	}
	p.mode = modeStall
	p.gate = make(chan struct{})
}

// Heal ends a Cut or a Stall: new connections are forwarded again, and
// after a stall the held bytes of open connections are delivered.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = modeOK
	p.openGate()
}

// Conns is how many connections the proxy is forwarding now.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Close stops accepting, closes every connection and waits for all of the
// proxy's goroutines to end. Calling it again does nothing.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.shut {
		p.mu.Unlock()
		p.wg.Wait()
		return
	}
	p.shut = true
	close(p.closed)
	p.openGate()
	_ = p.ln.Close()
	for l := range p.links {
		l.close(false)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// openGate lets bytes flow; p.mu is held.
func (p *Proxy) openGate() {
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient accept error (e.g. out of file descriptors):
			// back off briefly rather than spin.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.mu.Lock()
		switch {
		case p.shut:
			p.mu.Unlock()
			_ = c.Close()
			return
		case p.mode == modeCut:
			p.mu.Unlock()
			reset(c)
			continue
		}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.handle(c)
	}
}

// handle dials the target for client c and copies both ways until either
// side closes or the proxy cuts or closes the link.
func (p *Proxy) handle(c net.Conn) {
	defer p.wg.Done()
	// During a stall the target must not even see the connection; what
	// the client sends waits in the kernel's buffers.
	if !p.waitGate(p.closed) {
		_ = c.Close()
		return
	}
	s, err := net.DialTimeout("tcp", p.target, dialTimeout)
	if err != nil {
		reset(c) // the target is down: the client sees its connection refused, as it would directly
		return
	}
	l := &link{client: c, server: s, done: make(chan struct{})}
	p.mu.Lock()
	if p.shut || p.mode == modeCut {
		p.mu.Unlock()
		l.close(true)
		return
	}
	p.links[l] = struct{}{}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		p.pump(l, s, c)
	}()
	p.pump(l, c, s)
	<-l.done
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// pump copies src to dst, holding each chunk while the gate is shut, and
// closes the link when src ends or a write fails.
func (p *Proxy) pump(l *link, dst, src net.Conn) {
	defer l.close(false)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		// Neither bytes nor a close pass during a stall.
		if !p.waitGate(l.done) {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// waitGate waits until bytes may flow; false when done was closed first.
func (p *Proxy) waitGate(done <-chan struct{}) bool {
	p.mu.Lock()
	g := p.gate
	p.mu.Unlock()
	select {
	case <-g:
		return true
	case <-done:
		return false
	}
}

// close closes both ends once; with rst they are reset rather than closed
// in order, so the peers see "connection reset".
func (l *link) close(rst bool) {
	l.once.Do(func() {
		close(l.done)
		if rst {
			reset(l.client)
			reset(l.server)
			return
		}
		_ = l.client.Close()
		_ = l.server.Close()
	})
}

// reset closes c with an RST instead of a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
