package outbox

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/wire"
)

// Group messages. A group message is one envelope for all the members
// (account.SealGroup): one Fanout per relay the members use, on an
// anonymous connection kept for that group and relay, so that the relay
// never sees one key send to two groups. A recipient refused for good
// (its token revoked) is dropped; one refused for now (quota, rate) keeps
// the envelope queued for it alone. Fan-outs go in queue order per relay;
// a relay that cannot be reached stops its fan-outs, not the others'.

// flushFanouts delivers the queued group envelopes. o.mu is held.
func (o *Outbox) flushFanouts(ctx context.Context, fanouts []*localstore.Outgoing, res *Result) error {
	down := make(map[string]error) // relays that failed in this flush
	for _, q := range fanouts {
		left := q.Dest.Fanout
		for _, relay := range relaysOf(left) {
			if err := down[relay]; err != nil {
				continue
			}
			var err error
			left, err = o.fanout(ctx, q, relay, left)
			if err == nil {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !errors.Is(err, relayclient.ErrUnreachable) {
				return err
			}
			down[relay] = err
			if res.Unreachable == nil {
				res.Unreachable = err
			}
		}
		if err := o.settleFanout(ctx, q, left, res); err != nil {
			return err
		}
	}
	return nil
}

// relaysOf lists the relays of rs in first-appearance order.
func relaysOf(rs []localstore.Recipient) []string {
	var out []string
	for _, r := range rs {
		if !slices.Contains(out, r.Relay) {
			out = append(out, r.Relay)
		}
	}
	return out
}

// fanout sends q to its recipients on relay, in Fanouts of at most
// wire.MaxFanout, and returns the recipients still to reach: left less
// those the relay stored or refused for good.
func (o *Outbox) fanout(ctx context.Context, q *localstore.Outgoing, relay string, left []localstore.Recipient) ([]localstore.Recipient, error) {
	r, err := link.ParseRelay(relay)
	if err != nil {
		return left, fmt.Errorf("a group member's relay link: %w", err)
	}
	var these, others []localstore.Recipient
	for _, rc := range left {
		if rc.Relay == relay {
			these = append(these, rc)
		} else {
			others = append(others, rc)
		}
	}
	key := relay + "|group|" + string(q.Dest.Group[:])
	a, _, err := o.conn(ctx, key, r)
	if err != nil {
		return left, err
	}
	var keep []localstore.Recipient
	for len(these) > 0 {
		chunk := these[:min(len(these), wire.MaxFanout)]
		these = these[len(chunk):]
		m := wire.Fanout{ID: q.ID, Envelope: q.Envelope}
		for _, rc := range chunk {
			m.Recipients = append(m.Recipients, wire.Recipient{Mailbox: rc.Mailbox, Token: rc.Token})
		}
		fr, err := a.cn.Fanout(ctx, m)
		if err != nil {
			o.drop(key)
			return append(append(others, keep...), append(chunk, these...)...), err
		}
		for _, f := range fr.Failures {
			if int(f.Index) < len(chunk) && f.Code.Temporary() {
				keep = append(keep, chunk[f.Index])
			}
		}
	}
	return append(others, keep...), nil
}

// settleFanout records what is left of q: it leaves the outbox (and its
// message is sent) once no recipient is left, else it stays queued for
// those.
func (o *Outbox) settleFanout(ctx context.Context, q *localstore.Outgoing, left []localstore.Recipient, res *Result) error {
	if len(left) == len(q.Dest.Fanout) {
		return nil
	}
	err := o.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		if len(left) > 0 {
			d := *q.Dest
			d.Fanout = left
			return tx.SetDest(q.ID, &d)
		}
		if _, err := tx.Dequeue(q.ID); err != nil {
			return err
		}
		_, err := tx.AdvanceState(q.ID, 0, true, localstore.Sent)
		return err
	})
	if err == nil && len(left) == 0 {
		res.Sent[q.ID] = true
	}
	return err
}
