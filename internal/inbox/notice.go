package inbox

import (
	"github.com/ferry-im/ferry/internal/localstore"
)

// Notice codes: the first byte of a notice's body, then its text.
const (
	NoticeNewContact  byte = 1 // someone accepted the user's invite
	NoticeInviteReuse byte = 2 // a used invite came back from someone else
	NoticeRefused     byte = 3 // the inviter refused the user's introduction
)

// notice stores a notice (a message from Ferry itself, never from a
// contact) in the direct conversation conv of contact k: body = code(1)
// || text.
func (b *batch) notice(conv int64, k *localstore.Contact, code byte, text string) error {
	return b.noticeIn(conv, k.Name, code, text)
}

// noticeIn stores a notice in conversation conv, called name.
func (b *batch) noticeIn(conv int64, name string, code byte, text string) error {
	id, err := b.in.a.NewID()
	if err != nil {
		return err
	}
	m := &localstore.Message{
		ID: id, Conversation: conv, Sender: localstore.SenderFerry, Sent: b.now, Received: b.now,
		State: localstore.Delivered, Kind: localstore.KindNotice, Body: append([]byte{code}, text...),
	}
	if _, err := b.tx.InsertMessage(m); err != nil {
		return err
	}
	b.res.messages = append(b.res.messages, Stored{Message: m, Conversation: name})
	return nil
}
