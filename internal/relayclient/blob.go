package relayclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ferry-im/ferry/wire"
)

// Blobs (docs/protocol.md sections 5.7 and 6.13). Transfers are pipelined
// within a window that a pacer keeps just large enough to fill the path
// without queueing (pace.go), so that a text sent on the same connection,
// or on another one over the same bottleneck, is not stuck behind the
// transfer's bytes.

// BlobCreate creates the blob of write key key (size bytes, charged to
// mailbox mb, whose token is token), or finds it: the state says how much
// the relay already has, so it is also where a resumed upload starts.
// With reset the relay empties the blob first.
func (c *Conn) BlobCreate(ctx context.Context, key [32]byte, mb [16]byte, token [32]byte, size int64, reset bool) (wire.BlobState, error) {
	var flags byte
	if reset {
		flags = wire.BlobReset
	}
	a, err := c.request(ctx, func(id uint32) wire.Message {
		return wire.BlobCreate{ReqID: id, Flags: flags, Key: key, Mailbox: mb, Token: token, Size: uint64(size)}
	})
	return blobState(a, err)
}

// BlobStatus returns the state of the blob of write key key.
func (c *Conn) BlobStatus(ctx context.Context, key [32]byte) (wire.BlobState, error) {
	a, err := c.request(ctx, func(id uint32) wire.Message { return wire.BlobStatus{ReqID: id, Key: key} })
	return blobState(a, err)
}

func blobState(a wire.Message, err error) (wire.BlobState, error) {
	if err != nil {
		return wire.BlobState{}, err
	}
	st, ok := a.(wire.BlobState)
	if !ok {
		return wire.BlobState{}, fmt.Errorf("%w: the relay answered a blob request with %v", ErrUnreachable, a.Type())
	}
	return st, nil
}

// maxPiecesInFlight bounds a transfer's requests in flight.
const maxPiecesInFlight = 256

// piece is one request of a transfer in flight.
type piece struct {
	off  int64
	n    int
	sent time.Time
}

// transfer is the bookkeeping both directions share: requests in flight
// by id, their answers on one channel, the pacer.
type transfer struct {
	c        *Conn
	answers  chan wire.Message
	inflight map[uint32]piece
	bytes    int // in flight
	pace     pacer
}

func (c *Conn) newTransfer() *transfer {
	return &transfer{c: c, answers: make(chan wire.Message, maxPiecesInFlight), inflight: make(map[uint32]piece), pace: newPacer()}
}

// full reports whether the window has no room for another piece.
func (t *transfer) full() bool {
	return len(t.inflight) >= maxPiecesInFlight || (len(t.inflight) > 0 && t.bytes+t.pace.piece() > t.pace.window)
}

// start sends the request build makes for a fresh id, as piece p.
func (t *transfer) start(ctx context.Context, p piece, build func(id uint32) wire.Message) error {
	id := t.c.reqID.Add(1)
	if id == 0 {
		id = t.c.reqID.Add(1)
	}
	t.c.mu.Lock()
	t.c.waiters[id] = t.answers
	t.c.mu.Unlock()
	m := build(id)
	if err := t.c.send(ctx, m); err != nil {
		t.forget(id)
		return lost(fmt.Errorf("send %v: %w", m.Type(), err))
	}
	p.sent = time.Now()
	t.inflight[id] = p
	t.bytes += p.n
	return nil
}

func (t *transfer) forget(id uint32) {
	t.c.mu.Lock()
	delete(t.c.waiters, id)
	t.c.mu.Unlock()
}

// close stops waiting for the answers still in flight.
func (t *transfer) close() {
	for id := range t.inflight {
		t.forget(id)
	}
}

// next waits for the next answer and returns it with its piece, having
// fed the pacer. An Error answer comes back as a *RefusedError.
func (t *transfer) next(ctx context.Context, req wire.Type) (wire.Message, piece, error) {
	timer := time.NewTimer(t.c.timeout)
	defer timer.Stop()
	select {
	case a := <-t.answers:
		id := answerID(a)
		p, ok := t.inflight[id]
		if !ok {
			return nil, piece{}, fmt.Errorf("%w: an answer to no request", ErrUnreachable)
		}
		delete(t.inflight, id)
		t.bytes -= p.n
		t.pace.sample(time.Since(p.sent), p.n)
		if e, ok := a.(wire.Error); ok {
			return nil, p, &RefusedError{Request: req, Code: e.Code, Msg: e.Msg}
		}
		return a, p, nil
	case <-t.c.done:
		return nil, piece{}, t.c.err
	case <-timer.C:
		return nil, piece{}, fmt.Errorf("%w: no answer to %v within %v", ErrUnreachable, req, t.c.timeout)
	case <-ctx.Done():
		return nil, piece{}, ctx.Err()
	}
}

func answerID(a wire.Message) uint32 {
	switch a := a.(type) {
	case wire.BlobState:
		return a.ReqID
	case wire.BlobData:
		return a.ReqID
	case wire.Error:
		return a.ReqID
	}
	return 0
}

// Upload writes src (size bytes) to the blob of write key key, from
// st.Stored on (st is the state BlobCreate or BlobStatus returned), and
// returns the final state, complete with the relay's digest. progress,
// if not nil, is called with the bytes the relay has stored after each
// answer. A piece the relay did not store (it lost it) is sent again from
// where the relay says it is; bytes it has are never sent again.
func (c *Conn) Upload(ctx context.Context, key [32]byte, src io.ReaderAt, size int64, st wire.BlobState, progress func(stored int64)) (wire.BlobState, error) {
	if st.Complete {
		return st, nil
	}
	t := c.newTransfer()
	defer t.close()
	next, stored := int64(st.Stored), int64(st.Stored)
	rewind := false
	buf := make([]byte, wire.MaxBlobData)
	for {
		for !rewind && next < size && !t.full() {
			n := int(min(int64(t.pace.piece()), size-next))
			if _, err := src.ReadAt(buf[:n], next); err != nil && !errors.Is(err, io.EOF) {
				return st, fmt.Errorf("read attachment: %w", err)
			}
			data := append([]byte(nil), buf[:n]...)
			off := next
			if err := t.start(ctx, piece{off: off, n: n}, func(id uint32) wire.Message {
				return wire.BlobPut{ReqID: id, Key: key, Offset: uint64(off), Data: data}
			}); err != nil {
				return st, err
			}
			next += int64(n)
		}
		if len(t.inflight) == 0 {
			if rewind && stored < size {
				next, rewind = stored, false
				continue
			}
			return st, fmt.Errorf("%w: the relay did not complete the attachment", ErrUnreachable)
		}
		a, p, err := t.next(ctx, wire.TypeBlobPut)
		if err != nil {
			return st, err
		}
		st = a.(wire.BlobState)
		stored = int64(st.Stored)
		if progress != nil {
			progress(stored)
		}
		if st.Complete {
			c.log.Debug("upload done", "window", t.pace.window, "base_rtt", t.pace.base)
			return st, nil
		}
		if stored < p.off+int64(p.n) {
			rewind = true // the relay lacks this piece: go on from what it has
		}
	}
}

// Download reads the complete blob id (size bytes) into dst from offset
// from on, pipelined, and calls progress, if not nil, with the bytes
// written contiguously from the start after each answer. It returns a
// *RefusedError of code CodeNotFound if the relay does not have the blob.
func (c *Conn) Download(ctx context.Context, id [16]byte, dst io.WriterAt, from, size int64, progress func(done int64)) error {
	t := c.newTransfer()
	defer t.close()
	next, done := from, from
	got := make(map[int64]int) // pieces written beyond done, by offset
	for done < size {
		for next < size && !t.full() {
			n := int(min(int64(t.pace.piece()), size-next))
			off := next
			if err := t.start(ctx, piece{off: off, n: n}, func(rid uint32) wire.Message {
				return wire.BlobGet{ReqID: rid, ID: id, Offset: uint64(off), Length: uint32(n)}
			}); err != nil {
				return err
			}
			next += int64(n)
		}
		a, p, err := t.next(ctx, wire.TypeBlobGet)
		if err != nil {
			return err
		}
		d := a.(wire.BlobData)
		if int64(d.Offset) != p.off || len(d.Data) != p.n {
			return fmt.Errorf("%w: the relay sent %d bytes at %d for %d at %d (the attachment is shorter than announced)", ErrUnreachable, len(d.Data), d.Offset, p.n, p.off)
		}
		if _, err := dst.WriteAt(d.Data, p.off); err != nil {
			return fmt.Errorf("write attachment: %w", err)
		}
		got[p.off] = p.n
		for got[done] > 0 {
			n := got[done]
			delete(got, done)
			done += int64(n)
		}
		if progress != nil {
			progress(done)
		}
	}
	return nil
}

// Fanout sends one envelope to several mailboxes and waits for the
// relay's answer, which lists the recipients that did not get it.
func (c *Conn) Fanout(ctx context.Context, m wire.Fanout) (wire.FanoutResult, error) {
	answer := make(chan wire.Message, 1)
	c.mu.Lock()
	c.sending[m.ID] = answer
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.sending, m.ID)
		c.mu.Unlock()
	}()
	if err := c.send(ctx, m); err != nil {
		return wire.FanoutResult{}, lost(fmt.Errorf("send Fanout: %w", err))
	}
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case a := <-answer:
		r, ok := a.(wire.FanoutResult)
		if !ok {
			return wire.FanoutResult{}, fmt.Errorf("%w: the relay answered Fanout with %v", ErrUnreachable, a.Type())
		}
		return r, nil
	case <-c.done:
		return wire.FanoutResult{}, c.err
	case <-t.C:
		return wire.FanoutResult{}, fmt.Errorf("%w: no answer to Fanout within %v", ErrUnreachable, c.timeout)
	case <-ctx.Done():
		return wire.FanoutResult{}, ctx.Err()
	}
}
