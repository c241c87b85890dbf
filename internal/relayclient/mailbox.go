package relayclient

import (
	"context"
	"fmt"

	"github.com/ferry-im/ferry/wire"
)

// mailbox is the state of the connection's subscription. The reader
// appends Delivers to queue and never blocks on the caller: the relay
// bounds what it pushes by the mailbox's quota.
type mailbox struct {
	subID  uint32         // the Subscribe's request id, 0 before Subscribe
	queue  []wire.Deliver // received, not yet taken
	queued int            // Delivers received in all
	taken  int            // Delivers taken in all
	okAt   int            // Delivers received before the Subscribe's OK; -1 before it
	err    error          // the relay refused the Subscribe
}

// signal wakes a caller waiting on Ready. c.mu must be held.
func (c *Conn) signal() {
	select {
	case c.boxReady <- struct{}{}:
	default:
	}
}

func (c *Conn) handleDeliver(m wire.Deliver) error {
	c.mu.Lock()
	c.box.queue = append(c.box.queue, m)
	c.box.queued++
	c.signal()
	c.mu.Unlock()
	return nil
}

// subscribeAnswer records the answer to the Subscribe, if a is it, and
// reports whether it was.
func (c *Conn) subscribeAnswer(id uint32, a wire.Message) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == 0 || id != c.box.subID {
		return false
	}
	switch a := a.(type) {
	case wire.OK:
		c.box.okAt = c.box.queued
	case wire.Error:
		c.box.err = &RefusedError{Request: wire.TypeSubscribe, Code: a.Code, Msg: a.Msg}
	}
	c.signal()
	return true
}

// Subscribe asks the relay to push the mailbox of the connection's key:
// first every envelope waiting, then the Subscribe's answer, then new
// envelopes as they arrive (docs/protocol.md section 6.4). It returns once
// the request is sent; Take returns the Delivers, and Drained says when
// the backlog has been taken. After a refusal (Drained's error), it may
// be called again: a temporary one (rate limited) passes.
func (c *Conn) Subscribe(ctx context.Context) error {
	id := c.reqID.Add(1)
	c.mu.Lock()
	c.box.subID, c.box.okAt, c.box.err = id, -1, nil
	c.mu.Unlock()
	if err := c.send(ctx, wire.Subscribe{ReqID: id}); err != nil {
		return lost(fmt.Errorf("send Subscribe: %w", err))
	}
	return nil
}

// Ready receives a value when Delivers are waiting to be taken or the
// subscription's state changed since Ready last did.
func (c *Conn) Ready() <-chan struct{} { return c.boxReady }

// Take removes and returns up to max Delivers, oldest first. If more are
// left, Ready fires again.
func (c *Conn) Take(max int) []wire.Deliver {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := min(max, len(c.box.queue))
	if n == 0 {
		return nil
	}
	out := make([]wire.Deliver, n)
	copy(out, c.box.queue)
	c.box.queue = c.box.queue[n:]
	if len(c.box.queue) == 0 {
		c.box.queue = nil
	} else {
		c.signal() // more to take
	}
	c.box.taken += n
	return out
}

// Drained reports whether the relay has answered the Subscribe and every
// Deliver it sent before that answer has been taken. It returns an error
// if the relay refused the Subscribe: a *RefusedError, whose code says
// whether a later Subscribe may pass (wire.Code.Temporary).
func (c *Conn) Drained() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.box.err != nil {
		return false, c.box.err
	}
	return c.box.okAt >= 0 && c.box.taken >= c.box.okAt, nil
}

// Ack tells the relay that the envelopes with these sequence numbers are
// stored and may be deleted.
func (c *Conn) Ack(ctx context.Context, seqs []uint64) error {
	for len(seqs) > 0 {
		n := min(len(seqs), wire.MaxAcks)
		if err := c.send(ctx, wire.Ack{Seqs: seqs[:n]}); err != nil {
			return lost(fmt.Errorf("send Ack: %w", err))
		}
		seqs = seqs[n:]
	}
	return nil
}
