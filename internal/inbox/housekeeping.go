package inbox

import (
	"context"
	"slices"

	"github.com/ferry-im/ferry/internal/localstore"
)

// housekeeping forgets old seen ids, deletes messages whose disappearing
// timer ran out, and releases held messages whose predecessors did not
// come within the hold timeout, telling ev.
func (in *Inbox) housekeeping(ctx context.Context, ev Events) error {
	var rel []Stored
	var gone []int64
	err := in.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		if _, err := tx.ForgetSeen(in.a.Now().Add(-seenRetention)); err != nil {
			return err
		}
		var err error
		if gone, err = tx.Expire(in.a.Now()); err != nil {
			return err
		}
		rel, err = in.releaseExpired(tx)
		return err
	})
	if err == nil && len(rel) > 0 && ev.Messages != nil {
		ev.Messages(rel)
	}
	if err == nil && len(gone) > 0 && ev.Changed != nil {
		ev.Changed(gone)
	}
	return err
}

// releaseExpired shows messages held for longer than the hold timeout,
// with everything held before them from the same sender, giving up on the
// gap, and then whatever follows in order.
func (in *Inbox) releaseExpired(tx *localstore.Tx) ([]Stored, error) {
	held, err := tx.AllHeld()
	if err != nil || len(held) == 0 {
		return nil, err
	}
	cutoff := in.a.Now().Add(-orDefault(in.opts.HoldTimeout, defaultHoldTimeout))
	type key struct{ conv, sender int64 }
	upTo := make(map[key]uint64) // highest expired counter per sender
	var order []key
	for _, h := range held {
		k := key{h.Conversation, h.Sender}
		if h.Received.Before(cutoff) {
			if _, ok := upTo[k]; !ok {
				order = append(order, k)
			}
			upTo[k] = max(upTo[k], h.N)
		}
	}
	var out []Stored
	for _, k := range order {
		c, err := tx.Contact(k.sender)
		if err != nil {
			return nil, err
		}
		from := (&peer{k: c}).stored
		for _, h := range held {
			if h.Conversation == k.conv && h.Sender == k.sender && h.N <= upTo[k] {
				if err := tx.Release(h); err != nil {
					return nil, err
				}
				out = append(out, from(h))
			}
		}
		shown, err := tx.Counter(k.conv, k.sender)
		if err != nil {
			return nil, err
		}
		shown = max(shown, upTo[k])
		rel, err := releaseInOrder(tx, k.conv, k.sender, &shown)
		if err != nil {
			return nil, err
		}
		for _, r := range rel {
			out = append(out, from(r))
		}
		if err := tx.SetCounter(k.conv, k.sender, shown); err != nil {
			return nil, err
		}
	}
	if len(out) > 0 {
		in.a.Log.Warn("showing messages whose predecessors never arrived", "count", len(out))
	}
	return slices.Clip(out), nil
}
