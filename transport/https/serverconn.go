package https

import (
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Read buffer sizes of the relay side's pump: small while the stream is
// quiet, so that an idle connection holds little; large during bulk.
const (
	pumpSmall = 1 << 10
	pumpLarge = 32 << 10
)

var pumpPool = sync.Pool{New: func() any { b := make([]byte, pumpLarge); return &b }}

// serverConn is the relay side of a tunnel: the request body and the
// response of one HTTP request, as a net.Conn. The request's handler
// goroutine pumps the body into it (pump), so that a read deadline can
// end a Read without ending the body.
type serverConn struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	body  io.ReadCloser
	laddr net.Addr
	raddr net.Addr
	rng   *rand.Rand // piece sizes of writePieces; used by the shaped writer only

	writeMu sync.Mutex // writeMu serialises Writes; the handler takes it to return

	goneMu  sync.Mutex // goneMu protects gone and writing
	gone    bool       // the handler has returned: w is dead
	writing bool       // a Write is in w

	wdMu sync.Mutex // wdMu protects wdl
	wdl  time.Time

	mu      sync.Mutex // mu protects chunk, rerr and closed
	chunk   []byte     // pumped data not yet read
	rerr    error      // how the body ended, once chunk is drained
	closed  bool
	changed chan struct{} // closed and replaced when the fields above change

	rd       *deadline
	done     chan struct{} // closed by Close
	finished chan struct{} // closed when the handler returns
}

func newServerConn(w http.ResponseWriter, r *http.Request, laddr net.Addr, seed [32]byte) *serverConn {
	c := &serverConn{
		rng:      rand.New(rand.NewChaCha8(seed)),
		w:        w,
		rc:       http.NewResponseController(w),
		body:     r.Body,
		laddr:    laddr,
		raddr:    remoteAddr(r.RemoteAddr),
		changed:  make(chan struct{}),
		rd:       newDeadline(),
		done:     make(chan struct{}),
		finished: make(chan struct{}),
	}
	return c
}

// remoteAddr is the client's address as net/http reports it.
func remoteAddr(s string) net.Addr {
	if ap, err := net.ResolveTCPAddr("tcp", s); err == nil {
		return ap
	}
	return stringAddr(s)
}

type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

func (c *serverConn) broadcastLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// pump runs in the request's handler goroutine: it reads the body into
// the conn until the body ends or the conn is closed, then waits for the
// conn to be closed (the relay may still write) or the request to end.
func (c *serverConn) pump(r *http.Request) {
	defer close(c.finished)
	defer func() {
		c.writeMu.Lock()
		c.goneMu.Lock()
		c.gone = true
		c.goneMu.Unlock()
		c.writeMu.Unlock()
	}()
	small := make([]byte, pumpSmall)
	buf := small
	var large *[]byte
	for {
		n, err := c.body.Read(buf)
		if n > 0 && !c.handOver(buf[:n]) {
			break
		}
		if err != nil {
			c.mu.Lock()
			c.rerr = err
			c.broadcastLocked()
			c.mu.Unlock()
			break
		}
		switch {
		case n == len(buf) && large == nil:
			large = pumpPool.Get().(*[]byte)
			buf = *large
		case n < len(buf)/2 && large != nil:
			pumpPool.Put(large)
			large, buf = nil, small
		}
	}
	if large != nil {
		pumpPool.Put(large)
	}
	select {
	case <-c.done:
	case <-r.Context().Done():
	}
}

// handOver gives b to readers and waits until they have taken all of it.
// It reports false if the conn was closed first.
func (c *serverConn) handOver(b []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.chunk = b
	c.broadcastLocked()
	for len(c.chunk) > 0 && !c.closed {
		changed := c.changed
		c.mu.Unlock()
		<-changed
		c.mu.Lock()
	}
	return !c.closed
}

func (c *serverConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.closed {
			return 0, net.ErrClosed
		}
		select {
		case <-c.rd.wait():
			return 0, timeoutError{"read tunnel"}
		default:
		}
		if len(c.chunk) > 0 {
			n := copy(p, c.chunk)
			c.chunk = c.chunk[n:]
			if len(c.chunk) == 0 {
				c.chunk = nil
				c.broadcastLocked()
			}
			return n, nil
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-c.rd.wait():
		}
		c.mu.Lock()
	}
}

// Write writes p as response body and flushes it. A write still blocked
// at the write deadline resets the stream (net/http cannot resume it), so
// the conn is then broken; a deadline already passed fails the Write
// without harm.
func (c *serverConn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.goneMu.Lock()
	gone := c.gone
	c.writing = !gone
	c.goneMu.Unlock()
	if gone {
		return 0, net.ErrClosed
	}
	defer func() {
		c.goneMu.Lock()
		c.writing = false
		c.goneMu.Unlock()
	}()
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	c.wdMu.Lock()
	wdl := c.wdl
	c.wdMu.Unlock()
	var timedOut atomic.Bool
	if !wdl.IsZero() {
		wait := time.Until(wdl)
		if wait <= 0 {
			return 0, timeoutError{"write tunnel"}
		}
		t := time.AfterFunc(wait, func() {
			timedOut.Store(true)
			c.rc.SetWriteDeadline(time.Unix(1, 0))
		})
		defer t.Stop()
	}
	n, err := c.w.Write(p)
	if err == nil {
		err = c.rc.Flush()
	}
	if err != nil && timedOut.Load() {
		return n, timeoutError{"write tunnel"}
	}
	return n, err
}

// writePieces writes p, a shaped frame, in pieces of smallWrite/2 to
// smallWrite bytes, each flushed into a record of its own: net/http's
// HTTP/2 framer keeps a buffer as large as the largest frame it wrote, so
// a quiet tunnel holds little, and no record size repeats.
func (c *serverConn) writePieces(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		piece := smallWrite/2 + c.rng.IntN(smallWrite/2)
		m, err := c.Write(p[:min(len(p), piece)])
		n += m
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	return n, nil
}

// smallWrite is the largest piece of writePieces.
const smallWrite = 4 << 10

// Close ends the tunnel: the response ends (the client reads EOF after
// the data written), the request body is abandoned, and Close waits for
// the handler to return.
func (c *serverConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.finished
		return nil
	}
	c.closed = true
	close(c.done)
	c.broadcastLocked()
	c.mu.Unlock()
	// Wake the pump if it is reading the body, and a Write stuck on flow
	// control (its data could not be delivered anyway). w is dead once
	// the handler is gone.
	c.goneMu.Lock()
	if !c.gone {
		c.rc.SetReadDeadline(time.Unix(1, 0))
		if c.writing {
			c.rc.SetWriteDeadline(time.Unix(1, 0))
		}
	}
	c.goneMu.Unlock()
	<-c.finished
	return nil
}

func (c *serverConn) LocalAddr() net.Addr  { return c.laddr }
func (c *serverConn) RemoteAddr() net.Addr { return c.raddr }

func (c *serverConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *serverConn) SetReadDeadline(t time.Time) error {
	c.rd.set(t)
	return nil
}

func (c *serverConn) SetWriteDeadline(t time.Time) error {
	c.wdMu.Lock()
	c.wdl = t
	c.wdMu.Unlock()
	return nil
}
