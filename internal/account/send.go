package account

import (
	"time"

	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/session"
)

// SendOrdered queues a content that takes a place in the user's order in
// conv (a text, a reply, a timer): it takes the user's next counter n,
// makes the body with it (and the content's id and time), seals it for contact k with session s, and
// stores it as a queued outgoing message with the given disappearing
// timer in seconds (0: it stays). The caller saves s (in k) in the same
// transaction.
func (a *Account) SendOrdered(tx *localstore.Tx, k *localstore.Contact, s *session.Session, conv int64, body func(h Header) content.Body, timer int64) (*localstore.Message, error) {
	n, err := tx.Counter(conv, localstore.SenderSelf)
	if err != nil {
		return nil, err
	}
	n++
	id, err := a.NewID()
	if err != nil {
		return nil, err
	}
	now := time.UnixMilli(a.Now().UnixMilli())
	b := body(Header{N: n, ID: id, Sent: now})
	if err := a.Seal(tx, k, s, &content.Content{ID: id, Sent: now.UnixMilli(), Body: b}); err != nil {
		return nil, err
	}
	enc, err := content.EncodeBody(b)
	if err != nil {
		return nil, err
	}
	m := &localstore.Message{ID: id, Conversation: conv, Sender: localstore.SenderSelf, Sent: now,
		State: localstore.Queued, Kind: int(b.Kind()), Body: enc, N: n, Timer: timer}
	if timer > 0 {
		m.Expires = now.Add(time.Duration(timer) * time.Second)
	}
	if _, err := tx.InsertMessage(m); err != nil {
		return nil, err
	}
	return m, tx.SetCounter(conv, localstore.SenderSelf, n)
}

// Header is what SendOrdered chose for a content: the user's counter,
// the content id and the time sent.
type Header struct {
	N    uint64
	ID   [16]byte
	Sent time.Time
}

// SendUnordered seals a content for contact k with session s and queues
// it, returning its id and time (to the millisecond, as sent).
func (a *Account) SendUnordered(tx *localstore.Tx, k *localstore.Contact, s *session.Session, b content.Body) ([16]byte, time.Time, error) {
	id, err := a.NewID()
	if err != nil {
		return id, time.Time{}, err
	}
	now := time.UnixMilli(a.Now().UnixMilli())
	return id, now, a.Seal(tx, k, s, &content.Content{ID: id, Sent: now.UnixMilli(), Body: b})
}
