package inbox

import (
	"time"

	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
)

// handleUnknown keeps a message of a kind this client cannot handle (from
// a newer one): stored as sent, shown as unsupported, acknowledged with a
// delivery receipt. It takes no place in the sender's order.
func (b *batch) handleUnknown(p *peer, c *content.Content) error {
	body, err := content.EncodeBody(c.Body)
	if err != nil {
		return err
	}
	m := &localstore.Message{
		ID: c.ID, Conversation: p.conv.ID, Sender: p.k.ID, Sent: time.UnixMilli(c.Sent), Received: b.now,
		State: localstore.Delivered, Kind: int(c.Body.Kind()), Body: body,
	}
	inserted, err := b.tx.InsertMessage(m)
	if err != nil || !inserted {
		return err
	}
	b.in.a.Log.Info("kept a message of a kind this Ferry does not know", "kind", int(c.Body.Kind()))
	p.delivered = append(p.delivered, m.ID)
	b.res.messages = append(b.res.messages, p.stored(m))
	return nil
}
