package transporttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
)

// Network is an in-memory network: Listen registers an address, and
// DialContext connects to it with a net.Pipe. The zero value is ready to
// use and safe for concurrent use. It is a transport.Dialer.
type Network struct {
	mu        sync.Mutex // protects listeners
	listeners map[string]*Listener
}

var _ transport.Dialer = (*Network)(nil)

// ErrRefused is returned (wrapped) when nobody listens at the address.
var ErrRefused = errors.New("connection refused")

// Listen starts listening at addr, which must not be in use.
func (n *Network) Listen(addr string) (*Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.listeners[addr]; ok {
		return nil, fmt.Errorf("listen %s: address in use", addr)
	}
	if n.listeners == nil {
		n.listeners = make(map[string]*Listener)
	}
	l := &Listener{net: n, addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
	n.listeners[addr] = l
	return l, nil
}

// DialContext connects to the listener at ep.Addr. It blocks until the
// listener accepts, ctx ends, or the listener closes.
func (n *Network) DialContext(ctx context.Context, ep link.Endpoint) (net.Conn, error) {
	addr := ep.Addr
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial memory %s: %w", addr, err)
	}
	n.mu.Lock()
	l := n.listeners[addr]
	n.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("dial memory %s: %w", addr, ErrRefused)
	}
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, fmt.Errorf("dial memory %s: %w", addr, ctx.Err())
	case <-l.done:
		client.Close()
		server.Close()
		return nil, fmt.Errorf("dial memory %s: %w", addr, ErrRefused)
	}
}

// Listener is a Network listener; it implements net.Listener.
type Listener struct {
	net   *Network
	addr  string
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

var _ net.Listener = (*Listener)(nil)

// Accept waits for the next dial.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, fmt.Errorf("accept memory %s: %w", l.addr, net.ErrClosed)
	}
}

// Close stops listening; pending and later Accepts fail. It is idempotent.
func (l *Listener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.net.mu.Lock()
		delete(l.net.listeners, l.addr)
		l.net.mu.Unlock()
	})
	return nil
}

// Addr returns the listener's address.
func (l *Listener) Addr() net.Addr { return memAddr(l.addr) }

type memAddr string

func (memAddr) Network() string  { return "memory" }
func (a memAddr) String() string { return string(a) }
