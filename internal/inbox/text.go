package inbox

import (
	"time"

	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
)

// handleText stores a text message in the sender's order.
func (b *batch) handleText(p *peer, c *content.Content) error {
	t := c.Body.(*content.Text)
	body, err := content.EncodeBody(t)
	if err != nil {
		return err
	}
	return b.ordered(p, &localstore.Message{
		ID: c.ID, Conversation: p.conv.ID, Sender: p.k.ID, Sent: time.UnixMilli(c.Sent), Received: b.now,
		State: localstore.Delivered, Kind: int(content.KindText), Body: body, N: t.N,
	})
}
