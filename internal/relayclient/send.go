package relayclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-im/ferry/wire"
)

// ErrBusy is wrapped (together with ErrUnreachable) when the relay answered
// a Send with a temporary refusal: rate limited, over quota, unavailable.
var ErrBusy = errors.New("the relay is busy")

// SendResult is the relay's final answer to one Send.
type SendResult struct {
	ID [16]byte
	// Code is 0 when the envelope is durable at the relay (SendOK), else
	// the relay's permanent refusal (SendErr: denied, too large, bad
	// request), which no retry changes.
	Code wire.Code
	Msg  string
}

// SendBatch sends every envelope of batch at once, pipelined, and waits
// for the relay's answers. It returns the final answers received, in the
// order they came. It stops early, returning what it has with an error
// wrapping ErrUnreachable, when the connection fails, when no answer comes
// for the request timeout, or at the first temporary SendErr (the error
// then wraps ErrBusy too); the envelopes not answered may or may not be
// stored, and a retry with the same ids is harmless.
func (c *Conn) SendBatch(ctx context.Context, batch []wire.Send) ([]SendResult, error) {
	answers := make(chan wire.Message, len(batch))
	frames := make([]wire.Frame, len(batch))
	c.mu.Lock()
	for i, s := range batch {
		c.sending[s.ID] = answers
		f, err := wire.NewFrame(s)
		if err != nil {
			c.mu.Unlock()
			c.forget(batch)
			return nil, fmt.Errorf("encode Send: %w", err)
		}
		frames[i] = f
	}
	c.mu.Unlock()
	defer c.forget(batch)
	for range batch {
		c.watch.Awaiting()
	}
	if err := c.ch.SendBatch(ctx, frames); err != nil {
		return nil, lost(fmt.Errorf("send Send: %w", err))
	}
	out := make([]SendResult, 0, len(batch))
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	for len(out) < len(batch) {
		select {
		case a := <-answers:
			switch a := a.(type) {
			case wire.SendOK:
				out = append(out, SendResult{ID: a.ID})
			case wire.SendErr:
				if a.Code.Temporary() {
					return out, fmt.Errorf("%w: %w: relay says %s (%s)", ErrUnreachable, ErrBusy, a.Code, a.Msg)
				}
				c.log.Warn("relay refused a message for good", "code", a.Code.String())
				out = append(out, SendResult{ID: a.ID, Code: a.Code, Msg: a.Msg})
			}
			t.Reset(c.timeout)
		case <-c.done:
			return out, c.err
		case <-t.C:
			return out, fmt.Errorf("%w: no answer to Send within %v", ErrUnreachable, c.timeout)
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	return out, nil
}

// forget stops waiting for the answers to batch.
func (c *Conn) forget(batch []wire.Send) {
	c.mu.Lock()
	for _, s := range batch {
		delete(c.sending, s.ID)
	}
	c.mu.Unlock()
}
