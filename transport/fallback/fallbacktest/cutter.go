// Package fallbacktest is test support for the fallback dialer and its
// users: a loopback forwarder in front of one relay listener that a test
// can cut, as a censor that starts dropping a transport's packets does.
// Production code never imports it.
package fallbacktest

import (
	"io"
	"net"
	"sync"
)

// Cutter forwards the TCP connections of a loopback listener to an
// upstream address. While cut, it forwards nothing in either direction,
// on connections open before the cut and on new ones, which stay open and
// silent: a censor's drop, not a reset. The zero value is not usable;
// call NewCutter.
type Cutter struct {
	ln       net.Listener
	upstream string

	mu    sync.Mutex // mu protects cut and conns
	cut   bool
	conns map[net.Conn]struct{} // nil once the listener is closed
	wg    sync.WaitGroup
}

// NewCutter forwards a new loopback listener to upstream.
func NewCutter(upstream string) (*Cutter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &Cutter{ln: ln, upstream: upstream, conns: make(map[net.Conn]struct{})}
	c.wg.Go(c.accept)
	return c, nil
}

// Addr is the address to dial instead of upstream.
func (c *Cutter) Addr() string { return c.ln.Addr().String() }

// Cut starts dropping everything.
func (c *Cutter) Cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = true
}

// Restore lifts the cut. Bytes held while cut were dropped; connections
// made during the cut start forwarding from then on.
func (c *Cutter) Restore() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = false
}

// Close stops the listener, closes every connection and waits.
func (c *Cutter) Close() error {
	err := c.ln.Close()
	c.mu.Lock()
	for k := range c.conns {
		k.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
	return err
}

func (c *Cutter) track(cs ...net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conns == nil {
		return false
	}
	for _, k := range cs {
		c.conns[k] = struct{}{}
	}
	return true
}

func (c *Cutter) accept() {
	defer func() {
		c.mu.Lock()
		c.conns = nil
		c.mu.Unlock()
	}()
	for {
		down, err := c.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", c.upstream)
		if err != nil {
			down.Close()
			continue
		}
		if !c.track(down, up) {
			down.Close()
			up.Close()
			return
		}
		c.wg.Go(func() { c.pipe(up, down) })
		c.wg.Go(func() { c.pipe(down, up) })
	}
}

// pipe copies src to dst, dropping what it reads while cut. A clean EOF
// is passed on as a half close; any other end closes both conns.
func (c *Cutter) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			c.mu.Lock()
			cut := c.cut
			c.mu.Unlock()
			if !cut {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					err = werr
				}
			}
		}
		if err == io.EOF {
			dst.(*net.TCPConn).CloseWrite()
			return
		}
		if err != nil {
			dst.Close()
			src.Close()
			return
		}
	}
}
