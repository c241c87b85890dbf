package inbox

import (
	"errors"
	"time"

	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
)

// handleAttachment stores an attachment message in the sender's order
// and records its download, which the downloader does after the batch
// (download.go) if the attachment is small enough.
func (b *batch) handleAttachment(p *peer, c *content.Content) error {
	a := c.Body.(*content.Attachment)
	body, err := content.EncodeBody(a)
	if err != nil {
		return err
	}
	err = b.ordered(p, &localstore.Message{
		ID: c.ID, Conversation: p.conv.ID, Sender: p.k.ID, Sent: time.UnixMilli(c.Sent), Received: b.now,
		State: localstore.Delivered, Kind: int(content.KindAttachment), Body: body, N: a.N,
	})
	if err != nil {
		return err
	}
	if _, err := b.tx.Transfer(c.ID); !errors.Is(err, localstore.ErrNotFound) {
		return err // recorded already (a duplicate content id)
	}
	ptr, err := a.Pointer.MarshalBinary()
	if err != nil {
		return err
	}
	b.res.attachments = true
	return b.tx.PutTransfer(&localstore.Transfer{
		ID: c.ID, State: localstore.TransferPending, Size: a.Pointer.CiphertextSize(),
		Blob: a.Blob, Pointer: ptr, Name: a.Name, SHA256: a.SHA256, Received: b.now.UnixMilli(),
	})
}
