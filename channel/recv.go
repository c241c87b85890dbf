package channel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/ferry-im/ferry/wire"
)

var errClosed = net.ErrClosed

// inFrame is a frame being reassembled from the records of one stream.
type inFrame struct {
	stream uint32
	typ    wire.Type
	want   int    // payload length from the envelope header
	buf    []byte // payload received so far; cap(buf) is reserved from the budget
	start  int64  // when its first record arrived, Unix nanoseconds
}

// Recv returns the next complete frame, of any type (callers skip types
// they do not know, see wire.Decode). It must not be called from more than
// one goroutine at a time. A clean hang-up by the peer (between records, no
// frame in transit) returns io.EOF. ctx bounds the wait; after ctx ends
// Recv returns ctx.Err() and a later Recv continues where it stopped. Any
// other error is final: the conn is closed and every later Recv returns the
// same error.
func (c *Conn) Recv(ctx context.Context) (wire.Frame, error) {
	if c.rerr != nil {
		return wire.Frame{}, c.rerr
	}
	if err := ctx.Err(); err != nil {
		return wire.Frame{}, err
	}
	// Make a blocked read fail when ctx ends, but only once we are about to
	// block: records already read ahead are handled without the cost. The
	// wake-up stays registered for later calls with the same context.
	for {
		if !c.recordBuffered() {
			c.watchRead(ctx)
		}
		plain, err := c.readRecord()
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				return wire.Frame{}, ctx.Err()
			}
			return wire.Frame{}, c.fail(err)
		}
		f, ok, err := c.handleRecord(plain)
		c.releaseBuf(false)
		if errors.Is(err, ErrBudget) {
			return wire.Frame{}, c.fail(fmt.Errorf("read record: %w", err))
		}
		if err != nil {
			return wire.Frame{}, c.fail(fmt.Errorf("read record: %w: %v", ErrProtocol, err))
		}
		if ok {
			return f, nil
		}
	}
}

// watchRead makes the conn's reads fail once ctx is done (by moving the
// read deadline into the past), unless they already fail for ctx, which
// is then the context of the previous call. A context is told apart by its
// Done channel, so contexts that end together share the wake-up. Only Recv
// calls it.
func (c *Conn) watchRead(ctx context.Context) {
	done := ctx.Done()
	if done == c.rwatch.done {
		return
	}
	c.rwatch.mu.Lock()
	defer c.rwatch.mu.Unlock()
	c.unwatchLocked()
	if done == nil || c.rwatch.closed {
		return
	}
	fired := make(chan struct{})
	c.rwatch.done, c.rwatch.fired = done, fired
	c.rwatch.stop = context.AfterFunc(ctx, func() {
		defer close(fired)
		c.conn.SetReadDeadline(longAgo)
	})
}

// unwatchLocked undoes watchRead: it unregisters the wake-up, or, if it
// ran, waits for it and clears the read deadline. c.rwatch.mu must be held
// (stop is nil once Close unregistered it; if it ran, fired is closed).
func (c *Conn) unwatchLocked() {
	if c.rwatch.stop != nil && !c.rwatch.stop() {
		<-c.rwatch.fired
		c.conn.SetReadDeadline(time.Time{})
	}
	c.rwatch.done, c.rwatch.fired, c.rwatch.stop = nil, nil, nil
}

// fail records a final read error and closes the conn.
func (c *Conn) fail(err error) error {
	if err != io.EOF {
		err = c.closedErr(err)
	}
	c.rerr = err
	c.releaseBuf(true)
	for len(c.partial) > 0 {
		c.removePartial(0)
	}
	c.rwatch.mu.Lock()
	c.unwatchLocked()
	c.rwatch.mu.Unlock()
	if err != io.EOF {
		if errors.Is(err, ErrProtocol) {
			c.log.Debug("channel closed on a protocol violation", "err", err)
		}
		c.Close()
	}
	return err
}

// releaseBuf returns the read buffer to the pool if it holds no unread
// bytes (always, if force), so an idle channel holds no buffer.
func (c *Conn) releaseBuf(force bool) {
	if c.rbuf != nil && (force || c.rs == c.re) {
		if c.rbuf != &c.smallBuf {
			if c.budget != nil {
				c.budget.Release(len(*c.rbuf))
			}
			bufPool.Put(c.rbuf)
		}
		c.rbuf, c.rs, c.re = nil, 0, 0
	}
}

// takeBuf takes a pooled read buffer, charged to the budget while the
// channel holds it (a peer that stalls mid-record makes it hold one).
func (c *Conn) takeBuf() (*[]byte, error) {
	b := bufPool.Get().(*[]byte)
	if c.budget != nil && !c.budget.Reserve(len(*b)) {
		bufPool.Put(b)
		return nil, fmt.Errorf("read record: %w (read buffer)", ErrBudget)
	}
	return b, nil
}

// recordBuffered reports whether a whole record is already read ahead.
func (c *Conn) recordBuffered() bool {
	if c.hdrN != 0 || c.re-c.rs < lenPrefix {
		return false
	}
	size := int(binary.BigEndian.Uint16((*c.rbuf)[c.rs:]))
	return c.re-c.rs >= lenPrefix+size
}

// readRecord reads and decrypts one record. It keeps its progress in c, so
// that a read interrupted by a deadline can be resumed. While no bytes are
// buffered it waits for data in the Conn's small array (a small record is
// read whole with one Read); only for a record that does not fit there
// does it take a pooled buffer, into which it reads the record and
// whatever follows it (read-ahead, consumed by the next calls).
func (c *Conn) readRecord() ([]byte, error) {
	for c.hdrN < lenPrefix {
		if c.rs < c.re {
			c.hdr[c.hdrN] = (*c.rbuf)[c.rs]
			c.rs++
			c.hdrN++
			continue
		}
		c.releaseBuf(false)
		var n int
		var err error
		if c.hdrN == 0 {
			c.smallBuf = c.small[:]
			n, err = c.conn.Read(c.smallBuf)
			if n > 0 {
				c.rbuf, c.rs, c.re = &c.smallBuf, 0, n
				continue
			}
		} else {
			n, err = c.conn.Read(c.hdr[c.hdrN:])
			c.hdrN += n
			if c.hdrN == lenPrefix {
				break
			}
		}
		if err != nil {
			if err == io.EOF {
				if c.hdrN == 0 && len(c.partial) == 0 {
					return nil, io.EOF
				}
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("read record: %w", err)
		}
	}
	size := int(binary.BigEndian.Uint16(c.hdr[:]))
	if size < tagLen || size > tagLen+recordHeaderLen+MaxRecordData {
		return nil, fmt.Errorf("read record: %w: record of %d bytes", ErrProtocol, size)
	}
	if c.rbuf == nil {
		b, err := c.takeBuf()
		if err != nil {
			return nil, err
		}
		c.rbuf = b
	} else if c.rbuf == &c.smallBuf && c.rs+size > len(c.small) {
		// The record does not fit in the small array: move to a pooled
		// buffer.
		b, err := c.takeBuf()
		if err != nil {
			return nil, err
		}
		c.re = copy(*b, c.small[c.rs:c.re])
		c.rbuf, c.rs = b, 0
	}
	buf := *c.rbuf
	if c.re-c.rs < size && c.rs+size > len(buf) {
		c.re = copy(buf, buf[c.rs:c.re])
		c.rs = 0
	}
	for c.re-c.rs < size {
		n, err := c.conn.Read(buf[c.re:])
		c.re += n
		if c.re-c.rs >= size {
			break
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("read record: %w", err)
		}
	}
	body := buf[c.rs : c.rs+size]
	c.rs += size
	c.hdrN = 0
	plain, err := c.dec.Decrypt(body[:0], nil, body)
	if err != nil {
		return nil, fmt.Errorf("read record: %w: decrypt: %v", ErrProtocol, err)
	}
	return plain, nil
}

// handleRecord processes one decrypted record and returns a frame when the
// record completed one.
func (c *Conn) handleRecord(p []byte) (wire.Frame, bool, error) {
	if len(p) == 0 {
		return wire.Frame{}, false, nil // no-op record
	}
	if len(p) < recordHeaderLen {
		return wire.Frame{}, false, fmt.Errorf("record of %d bytes", len(p))
	}
	stream := binary.BigEndian.Uint32(p)
	flags := p[4]
	data := p[recordHeaderLen:]
	if flags&^knownFlags != 0 {
		return wire.Frame{}, false, fmt.Errorf("unknown record flags 0x%02x", flags)
	}
	i := c.findPartial(stream)
	if flags&flagAbort != 0 {
		if flags != flagAbort || len(data) != 0 || i < 0 {
			return wire.Frame{}, false, fmt.Errorf("bad abort record for stream %d", stream)
		}
		c.removePartial(i)
		return wire.Frame{}, false, nil
	}
	fin := flags&flagFin != 0
	if i < 0 {
		// First record of a frame: the envelope header is here.
		t, n, err := wire.ParseHeader(data)
		if err != nil {
			return wire.Frame{}, false, err
		}
		data = data[wire.HeaderLen:]
		if len(data) > n || fin && len(data) != n {
			return wire.Frame{}, false, fmt.Errorf("stream %d: %d payload bytes for a frame of %d", stream, len(data), n)
		}
		if fin {
			return wire.Frame{Type: t, Payload: clone(data)}, true, nil
		}
		if len(c.partial) >= maxPartial {
			return wire.Frame{}, false, fmt.Errorf("more than %d frames in transit", maxPartial)
		}
		in := &inFrame{stream: stream, typ: t, want: n, start: time.Now().UnixNano()}
		if err := c.grow(in, len(data)); err != nil {
			return wire.Frame{}, false, err
		}
		in.buf = append(in.buf, data...)
		c.partial = append(c.partial, in)
		c.updateInTransit()
		return wire.Frame{}, false, nil
	}
	in := c.partial[i]
	if len(in.buf)+len(data) > in.want || fin && len(in.buf)+len(data) != in.want {
		return wire.Frame{}, false, fmt.Errorf("stream %d: %d payload bytes for a frame of %d", stream, len(in.buf)+len(data), in.want)
	}
	if err := c.grow(in, len(data)); err != nil {
		return wire.Frame{}, false, err
	}
	in.buf = append(in.buf, data...)
	if !fin {
		return wire.Frame{}, false, nil
	}
	c.removePartial(i)
	return wire.Frame{Type: in.typ, Payload: in.buf}, true, nil
}

// grow makes room in in.buf for n more bytes. The buffer grows with the
// data, never ahead of it: to twice its size or what the data needs,
// whichever is more, and never past the declared length, so it holds at
// most twice the bytes received (and at least minFrameBuf). Each growth
// is reserved from the budget first; a refusal fails the channel with
// ErrBudget.
func (c *Conn) grow(in *inFrame, n int) error {
	need := len(in.buf) + n
	if need <= cap(in.buf) {
		return nil
	}
	size := min(in.want, max(need, 2*cap(in.buf), minFrameBuf))
	if c.budget != nil && !c.budget.Reserve(size-cap(in.buf)) {
		return fmt.Errorf("stream %d: %w (frame of %d bytes, %d received)", in.stream, ErrBudget, in.want, len(in.buf))
	}
	nb := make([]byte, len(in.buf), size)
	copy(nb, in.buf)
	in.buf = nb
	return nil
}

func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

func (c *Conn) findPartial(stream uint32) int {
	for i, in := range c.partial {
		if in.stream == stream {
			return i
		}
	}
	return -1
}

// removePartial forgets a frame in transit (complete, aborted or
// abandoned) and releases its buffer from the budget.
func (c *Conn) removePartial(i int) {
	if c.budget != nil {
		c.budget.Release(cap(c.partial[i].buf))
	}
	copy(c.partial[i:], c.partial[i+1:])
	c.partial[len(c.partial)-1] = nil
	c.partial = c.partial[:len(c.partial)-1]
	if len(c.partial) == 0 {
		c.partial = nil
	}
	c.updateInTransit()
}

// updateInTransit publishes when the oldest frame in transit started.
func (c *Conn) updateInTransit() {
	var oldest int64
	for _, in := range c.partial {
		if oldest == 0 || in.start < oldest {
			oldest = in.start
		}
	}
	c.inTransitSince.Store(oldest)
}
