package relay

import (
	"context"
	"errors"

	"github.com/ferry-im/ferry/wire"
)

// fanoutUnit is how many recipients of a Fanout cost one token of the
// request rate limits: a recipient costs the relay a token check and a
// Put, but not a frame, a parse or a round trip.
const fanoutUnit = 32

// handleFanout stores one envelope in every recipient's mailbox whose
// token the client holds, as one Send to each would (quota, de-duplication
// by id, push to subscribers), and answers once every Put is durable,
// listing the recipients that did not get it (docs/protocol.md 6.13).
func (c *conn) handleFanout(ctx context.Context, m wire.Fanout) error {
	bm := c.s.metrics.blob
	bm.fanouts.Inc()
	res := wire.FanoutResult{ID: m.ID}
	failAll := func(result string, code wire.Code) error {
		for i := range m.Recipients {
			res.Failures = append(res.Failures, wire.FanoutFailure{Index: uint16(i), Code: code})
		}
		bm.recipients.WithLabelValues(result).Add(float64(len(m.Recipients)))
		return c.reply(ctx, res)
	}
	cost := float64(1 + (len(m.Recipients)-1)/fanoutUnit)
	if !c.s.keyLimit.allowN(c.keyID, cost) || !c.s.addrLimit.allowN(c.addr, cost) {
		return failAll("rate_limited", wire.CodeRateLimited)
	}
	type put struct {
		i    int
		env  Envelope
		wait func() (uint64, bool, error)
	}
	var puts []put
	failed := make(map[int]wire.Code)
	q := Quota{MaxCount: c.s.limits.MailboxCount, MaxBytes: c.s.limits.MailboxBytes}
	for i, r := range m.Recipients {
		ok, err := c.checkToken(ctx, r.Mailbox, r.Token)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.log.Error("check token", "err", err)
			failed[i] = wire.CodeUnavailable
			continue
		}
		if !ok {
			failed[i] = wire.CodeDenied
			continue
		}
		env := Envelope{ID: m.ID, Received: c.s.now(), Data: m.Envelope}
		wait, _ := c.s.store.PutAsyncPoll(ctx, r.Mailbox, env, q)
		puts = append(puts, put{i, env, wait})
	}
	for _, p := range puts {
		seq, dup, err := p.wait()
		switch {
		case errors.Is(err, ErrQuota):
			failed[p.i] = wire.CodeQuota
		case errors.Is(err, ErrNotFound):
			failed[p.i] = wire.CodeDenied
		case err != nil:
			if ctx.Err() == nil {
				c.log.Error("store envelope", "err", err)
			}
			failed[p.i] = wire.CodeUnavailable
		case dup:
			bm.recipients.WithLabelValues("duplicate").Inc()
		default:
			bm.recipients.WithLabelValues("stored").Inc()
		}
		if err == nil && seq > 0 && (!dup || c.s.cluster != nil) {
			env := p.env
			env.Seq = seq
			c.s.hub.publish(c.work, m.Recipients[p.i].Mailbox, env)
		}
	}
	for i := range m.Recipients {
		if code, ok := failed[i]; ok {
			res.Failures = append(res.Failures, wire.FanoutFailure{Index: uint16(i), Code: code})
			bm.recipients.WithLabelValues(fanoutResult(code)).Inc()
		}
	}
	return c.reply(ctx, res)
}

func fanoutResult(c wire.Code) string {
	switch c {
	case wire.CodeDenied:
		return "denied"
	case wire.CodeQuota:
		return "quota"
	}
	return "error"
}
