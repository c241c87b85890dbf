package https

import (
	"net"
	"sync"
)

// batchConn is the TCP connection under a tunnel's TLS. Between start and
// flush it gathers what TLS writes and hands it to the socket in one
// write: TLS writes each record of at most 16 KiB with a system call of
// its own, and a tunnel's 64 KiB write of DATA frames would cost four or
// five. The records, their sizes and their order are unchanged; only how
// many of them share a write is.
//
// Outside start and flush (the handshake, control frames, a connection
// handed to net/http) writes go straight through.
type batchConn struct {
	net.Conn

	mu       sync.Mutex // mu protects the fields below
	batching bool
	buf      *[]byte // pooled while batching
	err      error   // a failed flush: every later write fails too, as in TLS
}

// maxBatch is how many bytes a batch holds before it is written early.
const maxBatch = 256 << 10

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, sendBatch+sendBatch/16); return &b }}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if !c.batching {
		return c.Conn.Write(p)
	}
	if c.buf == nil {
		c.buf = batchPool.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	if len(*c.buf) >= maxBatch {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// start gathers writes until flush. A nil c does nothing.
func (c *batchConn) start() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.batching = true
	c.mu.Unlock()
}

// flush writes what was gathered since start and stops gathering. A nil
// c does nothing.
func (c *batchConn) flush() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = false
	err := c.flushLocked()
	if c.buf != nil {
		*c.buf = (*c.buf)[:0]
		if cap(*c.buf) <= maxBatch+sendBatch {
			batchPool.Put(c.buf)
		}
		c.buf = nil
	}
	return err
}

// flushLocked writes the gathered bytes; c.mu is held.
func (c *batchConn) flushLocked() error {
	if c.buf == nil || len(*c.buf) == 0 {
		return c.err
	}
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	if err != nil && c.err == nil {
		c.err = err
	}
	return c.err
}
