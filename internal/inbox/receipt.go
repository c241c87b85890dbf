package inbox

import (
	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
)

// handleReceipt moves the listed outgoing messages of p's conversation
// forward (never back): delivered or read.
func (b *batch) handleReceipt(p *peer, c *content.Content) error {
	r := c.Body.(*content.Receipt)
	st := localstore.Delivered
	if r.Status == content.ReceiptRead {
		st = localstore.Read
	}
	for _, id := range r.IDs {
		moved, err := b.tx.AdvanceState(id, p.conv.ID, true, st)
		if err != nil {
			return err
		}
		b.res.stateMoved = b.res.stateMoved || moved
	}
	return b.grantDelivered(p, r.IDs)
}

// queueReceipt queues a receipt for ids to p.
func (b *batch) queueReceipt(p *peer, status byte, ids [][16]byte) error {
	queued, err := b.in.a.QueueReceipt(b.tx, p.k, p.s, status, ids)
	b.res.queued = b.res.queued || queued
	return err
}
