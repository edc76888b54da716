package chaos

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Proxy is a TCP proxy standing where a service's address is: the parts of
// gemq dial it instead of the service, so the harness can make the service
// unreachable (Block) or move it (SetBackend: a failover keeps the address,
// as Memorystore's does) without the parts knowing.
type Proxy struct {
	// Addr is the address to dial ("127.0.0.1:port").
	Addr string

	lis     net.Listener
	mu      sync.Mutex
	backend string
	blocked bool
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

// StartProxy listens on a free loopback port and forwards every connection
// to backend.
func StartProxy(backend string) (*Proxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p := &Proxy{Addr: lis.Addr().String(), lis: lis, backend: backend, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		backend, blocked := p.backend, p.blocked
		p.mu.Unlock()
		if blocked {
			// Unreachable: the connection is dropped at once, as by a
			// service that is down behind a load balancer.
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c, backend)
	}
}

func (p *Proxy) serve(c net.Conn, backend string) {
	defer p.wg.Done()
	b, err := net.Dial("tcp", backend)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c, b) {
		c.Close()
		b.Close()
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(b, c)
	go pipe(c, b)
	<-done
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, b)
	p.mu.Unlock()
}

// track registers a connection pair unless the proxy was blocked meanwhile.
func (p *Proxy) track(c, b net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blocked || p.conns == nil {
		return false
	}
	p.conns[c], p.conns[b] = struct{}{}, struct{}{}
	return true
}

// dropAll closes every proxied connection; p.mu is held.
func (p *Proxy) dropAll() {
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Block makes the service unreachable: open connections are cut and new
// ones are closed as soon as they are accepted, until Unblock.
func (p *Proxy) Block() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = true
	p.dropAll()
}

// Unblock makes the service reachable again.
func (p *Proxy) Unblock() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = false
}

// SetBackend sends new connections to backend and cuts the open ones (their
// clients reconnect, to the new backend).
func (p *Proxy) SetBackend(backend string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backend = backend
	p.dropAll()
}

// Close stops the proxy and cuts every connection.
func (p *Proxy) Close() error {
	err := p.lis.Close()
	p.mu.Lock()
	p.dropAll()
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
