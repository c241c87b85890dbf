package channel

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/ferry-im/ferry/wire"
)

// outFrame is a frame queued by Send or SendBatch. Fields other than done
// and lead are protected by Conn.wmu.
type outFrame struct {
	stream  uint32
	hdr     [wire.HeaderLen]byte
	payload []byte
	// prev is the frame before it in its SendBatch call, nil for the first
	// (and for Send): a frame starts only once prev is fully queued, so a
	// batch arrives in order.
	prev     *outFrame
	off      int  // stream bytes (header then payload) put into records so far
	started  bool // at least one record queued
	aborted  bool // the owner gave up (ctx); the frame is dropped or aborted
	abortQ   bool // the abort record has been queued
	leader   bool // the owner has been handed the writer role
	finished bool // done has been sent (or would have been: done may be nil)
	// done receives the frame's outcome; only the last frame of a call,
	// the one its owner waits for, has it.
	done chan error
	// lead hands the owner the writer role; nil for the other frames of a
	// batch and for the frame of a sender that took the role at once.
	lead chan struct{}
}

func (f *outFrame) total() int      { return wire.HeaderLen + len(f.payload) }
func (f *outFrame) queuedAll() bool { return f.off == f.total() || f.abortQ }

// ready reports whether f may start: the frame before it in its batch is
// fully queued.
func (f *outFrame) ready() bool { return f.prev == nil || f.prev.queuedAll() }

// Send sends f. It returns once the last record of f has been written to the
// conn, so frames sent one after another by one goroutine arrive in order;
// frames sent concurrently are interleaved record by record, frames that fit
// in one record before the records of larger ones. Records queued by
// concurrent senders while one of them writes are encrypted into that
// sender's next Write, so concurrent small frames share system calls.
//
// ctx bounds the wait for a turn to write. If ctx ends before f is fully
// written, Send returns ctx.Err() and f is dropped (if no record was written)
// or aborted (the receiver discards it). A write blocked in the conn is
// unblocked only by Close.
func (c *Conn) Send(ctx context.Context, f wire.Frame) error {
	return c.send(ctx, []wire.Frame{f})
}

// SendBatch sends frames in order, as Send would one after another, but
// without waiting for each: the frames' records go into as few Writes as
// fit (up to 32 KiB of records per Write), so a batch of small frames costs
// one system call. It returns once the last record of the last frame has
// been written. Frames of concurrent Sends may come between the batch's
// frames, and a small frame sent concurrently is not delayed behind a large
// frame of the batch.
//
// If ctx ends before the batch is written, SendBatch returns ctx.Err(): a
// prefix of frames has then been sent, the next one may have been aborted
// (the receiver discards it) and the rest were dropped. On any other error
// the channel is broken and the frames after some prefix are lost.
func (c *Conn) SendBatch(ctx context.Context, frames []wire.Frame) error {
	if len(frames) == 0 {
		return nil
	}
	return c.send(ctx, frames)
}

func (c *Conn) send(ctx context.Context, frames []wire.Frame) error {
	for _, f := range frames {
		if len(f.Payload) > wire.MaxPayload {
			return fmt.Errorf("send %v: payload of %d bytes: %w", f.Type, len(f.Payload), wire.ErrTooLarge)
		}
	}
	ofs := make([]outFrame, len(frames))
	for i, f := range frames {
		of := &ofs[i]
		of.payload = f.Payload
		of.hdr[0] = byte(f.Type)
		binary.BigEndian.PutUint32(of.hdr[1:], uint32(len(f.Payload)))
		if i > 0 {
			of.prev = &ofs[i-1]
		}
	}
	own := &ofs[len(ofs)-1]
	own.done = make(chan error, 1)

	c.wmu.Lock()
	if c.werr != nil {
		err := c.werr
		c.wmu.Unlock()
		return err
	}
	if c.closed.Load() {
		c.wmu.Unlock()
		return fmt.Errorf("send %v: %w", frames[0].Type, errClosed)
	}
	for i := range ofs {
		c.nextStream++
		if c.nextStream == 0 {
			c.nextStream = 1
		}
		ofs[i].stream = c.nextStream
		c.queue = append(c.queue, &ofs[i])
	}
	if !c.writing {
		c.writing = true
		c.wmu.Unlock()
		return c.write(ctx, own, nil)
	}
	own.lead = make(chan struct{}, 1) // only a waiting sender can be handed the role
	c.wmu.Unlock()
	select {
	case err := <-own.done:
		return err
	case <-own.lead:
		return c.write(ctx, own, nil)
	case <-ctx.Done():
	}
	// Give up, unless the frames were finished or we were made the writer
	// meanwhile.
	c.wmu.Lock()
	if own.finished || own.queuedAll() {
		// Its last record is being written: the frames will arrive.
		c.wmu.Unlock()
		return <-own.done
	}
	c.abandon(own)
	if own.leader {
		c.wmu.Unlock()
		return c.write(ctx, own, ctx.Err())
	}
	c.wmu.Unlock()
	return ctx.Err()
}

// abandon gives up own and the frames of its batch not fully queued: those
// not started are dropped, a started one is marked for an abort record.
// Frames of a batch start in order, so the walk stops at the first fully
// queued one. c.wmu must be held.
func (c *Conn) abandon(own *outFrame) {
	for f := own; f != nil && !f.queuedAll(); f = f.prev {
		f.aborted = true
		if !f.started {
			c.remove(f)
		}
	}
}

// remove deletes f from the queue. c.wmu must be held.
func (c *Conn) remove(f *outFrame) bool {
	for i, g := range c.queue {
		if g == f {
			copy(c.queue[i:], c.queue[i+1:])
			c.queue[len(c.queue)-1] = nil
			c.queue = c.queue[:len(c.queue)-1]
			if len(c.queue) == 0 && cap(c.queue) > 8 {
				c.queue = nil // do not keep a burst's array on an idle channel
			}
			return true
		}
	}
	return false
}

// record is one record chosen for the batch being written.
type record struct {
	f     *outFrame
	from  int // stream offset
	to    int
	flags byte
}

// write runs the writer role for own until own is written (or, if own was
// abandoned, until someone else can take over), then hands the role to the
// owner of another queued frame. abandoned is non-nil if own's owner gave
// up; it is what write returns. Once own is written the writer goes on
// writing what others queued for up to handOffAfter bytes, so that one
// Write serves many waiting senders, before it hands the role over.
func (c *Conn) write(ctx context.Context, own *outFrame, abandoned error) error {
	var bufp *[]byte
	defer func() {
		if bufp != nil {
			bufPool.Put(bufp)
		}
	}()
	var batchArr [16]record // enough for a batch of small records, on the stack
	batch := batchArr[:0]
	extra := 0 // bytes written for others since own was finished
	for {
		c.wmu.Lock()
		own.leader = true
		if abandoned == nil && !own.finished && ctx.Err() != nil && !own.queuedAll() {
			abandoned = ctx.Err()
			c.abandon(own)
		}
		ownDone := abandoned != nil || own.finished
		if c.werr != nil || len(c.queue) == 0 || ownDone && extra >= handOffAfter {
			if next := c.nextOwner(own); next != nil && c.werr == nil {
				next.leader = true
				next.lead <- struct{}{}
				c.wmu.Unlock()
				return c.result(own, abandoned)
			}
			if len(c.queue) == 0 || c.werr != nil {
				c.writing = false
				c.wmu.Unlock()
				return c.result(own, abandoned)
			}
			// Only abandoned frames remain: write their abort records.
		}
		batch = c.pick(batch[:0])
		if len(batch) == 0 {
			// Nothing can be written (cannot happen while the queue holds a
			// frame; kept so a bug stalls nobody): give the role up.
			c.writing = false
			c.wmu.Unlock()
			return c.result(own, abandoned)
		}
		c.wmu.Unlock()

		if bufp == nil {
			bufp = bufPool.Get().(*[]byte)
		}
		n, err := c.writeBatch(*bufp, batch)
		if ownDone {
			extra += n
		}

		c.wmu.Lock()
		if err != nil {
			err = fmt.Errorf("write record: %w", c.closedErr(err))
			c.werr = err
			for _, f := range c.queue {
				f.finish(err)
			}
			c.queue = nil
			c.writing = false
			c.wmu.Unlock()
			return c.result(own, abandoned)
		}
		for _, r := range batch {
			if r.f.queuedAll() && c.remove(r.f) {
				r.f.finish(nil)
			}
		}
		c.wmu.Unlock()
	}
}

// finish completes f with err. c.wmu must be held.
func (f *outFrame) finish(err error) {
	f.finished = true
	if f.done != nil {
		f.done <- err
	}
}

func (c *Conn) result(own *outFrame, abandoned error) error {
	if abandoned != nil {
		return abandoned
	}
	return <-own.done
}

// nextOwner returns the owner of a queued frame still waiting, other than
// own, to hand the writer role to. c.wmu must be held.
func (c *Conn) nextOwner(own *outFrame) *outFrame {
	for _, f := range c.queue {
		if f != own && !f.aborted && f.lead != nil {
			return f
		}
	}
	return nil
}

// pick chooses the records of the next batch and advances the frames'
// offsets: first abort records, then frames that fit in one record (in
// arrival order), then one record of each larger frame in turn (by stream
// id, at most maxPartial started at once), until writeBatch bytes.
// c.wmu must be held.
func (c *Conn) pick(batch []record) []record {
	size := 0
	for size < writeBatch {
		r, ok := c.pickOne()
		if !ok {
			break
		}
		batch = append(batch, r)
		size += recordHeaderLen + r.to - r.from + tagLen + lenPrefix
	}
	return batch
}

func (c *Conn) pickOne() (record, bool) {
	for _, f := range c.queue {
		if f.aborted && f.started && !f.queuedAll() {
			f.abortQ = true
			return record{f: f, flags: flagAbort}, true
		}
	}
	for _, f := range c.queue {
		if !f.started && !f.aborted && f.total() <= MaxRecordData && f.ready() {
			f.started = true
			f.off = f.total()
			return record{f: f, from: 0, to: f.total(), flags: flagFin}, true
		}
	}
	active := 0
	for _, f := range c.queue {
		if f.started && !f.queuedAll() {
			active++
		}
	}
	// Round robin by stream id: the eligible frame with the smallest id
	// after lastLarge, else the smallest id overall. Stream ids wrap only
	// after 2^32 frames, and the order then merely restarts.
	var next, first *outFrame
	for _, f := range c.queue {
		if f.aborted || f.queuedAll() || (!f.started && (active >= maxPartial || !f.ready())) {
			continue
		}
		if first == nil || f.stream < first.stream {
			first = f
		}
		if f.stream > c.lastLarge && (next == nil || f.stream < next.stream) {
			next = f
		}
	}
	if next == nil {
		next = first
	}
	if next == nil {
		return record{}, false
	}
	c.lastLarge = next.stream
	next.started = true
	r := record{f: next, from: next.off, to: min(next.off+MaxRecordData, next.total())}
	next.off = r.to
	if next.queuedAll() {
		r.flags = flagFin
	}
	return r, true
}

// writeBatch encrypts the records into buf and writes them in one Write.
// Only the writer calls it.
func (c *Conn) writeBatch(buf []byte, batch []record) (int, error) {
	n := 0
	for _, r := range batch {
		start := n
		p := start + lenPrefix
		binary.BigEndian.PutUint32(buf[p:], r.f.stream)
		buf[p+4] = r.flags
		m := p + recordHeaderLen
		// Stream bytes are the envelope header followed by the payload.
		for off := r.from; off < r.to; {
			if off < wire.HeaderLen {
				k := copy(buf[m:], r.f.hdr[off:min(r.to, wire.HeaderLen)])
				m += k
				off += k
				continue
			}
			k := copy(buf[m:], r.f.payload[off-wire.HeaderLen:r.to-wire.HeaderLen])
			m += k
			off += k
		}
		// Encrypt in place: the ciphertext overwrites the plaintext exactly.
		out, err := c.enc.Encrypt(buf[:p], nil, buf[p:m])
		if err != nil {
			return 0, fmt.Errorf("encrypt: %w", err)
		}
		binary.BigEndian.PutUint16(buf[start:], uint16(len(out)-p))
		n = len(out)
	}
	return c.conn.Write(buf[:n])
}
