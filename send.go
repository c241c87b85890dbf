package ferry

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ferry-im/ferry/internal/account"
	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/session"
)

// MaxText is the longest text of one message, in bytes.
const MaxText = content.MaxText

// Send queues text for a conversation and delivers the outbox. It returns
// once the recipient's relay has durably accepted the message, or
// ErrQueued if the relay could not be reached (the message stays queued
// and a later Send, Flush or Sync delivers it).
func (c *Client) Send(ctx context.Context, conv ConversationID, text string) (*Message, error) {
	msgs, err := c.SendMany(ctx, conv, []string{text})
	if len(msgs) == 1 {
		return msgs[0], err
	}
	return nil, err
}

// SendMany queues each text as its own message to a conversation, in
// order, in one transaction, then delivers the outbox like Send. It
// returns ErrQueued unless every one of them was acknowledged by the
// relay. An empty text (or only white space) is ErrEmpty, and nothing is
// sent.
func (c *Client) SendMany(ctx context.Context, conv ConversationID, texts []string) ([]*Message, error) {
	for _, t := range texts {
		if len(t) > MaxText {
			return nil, fmt.Errorf("message of %d bytes is longer than the limit of %d", len(t), MaxText)
		}
		if strings.TrimSpace(t) == "" {
			return nil, ErrEmpty
		}
	}
	var msgs []*Message
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) (err error) {
		msgs, err = c.queueTexts(tx, conv, texts)
		return err
	})
	if err != nil {
		return nil, err
	}
	ids := make([][16]byte, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	if err := c.flushIDs(ctx, ids); err != nil {
		return msgs, err
	}
	for _, m := range msgs {
		m.State = StateSent
	}
	return msgs, nil
}

// queued is ErrQueued, wrapping why the relay could not be reached when
// that is known.
func queued(why error) error {
	if why == nil {
		return ErrQueued
	}
	return fmt.Errorf("%w: %w", ErrQueued, why)
}

// queueTexts encrypts texts for conv's contact, queues their envelopes and
// stores them as queued messages.
func (c *Client) queueTexts(tx *localstore.Tx, id ConversationID, texts []string) ([]*Message, error) {
	conv, err := conversation(tx, id)
	if err != nil {
		return nil, err
	}
	if conv.Kind == localstore.Group {
		return c.queueGroupTexts(tx, conv, texts)
	}
	k, s, n, err := c.direct(tx, conv)
	if err != nil {
		return nil, err
	}
	names := &names{contacts: map[int64]*localstore.Contact{k.ID: k}, byID: map[int64]*localstore.Conversation{conv.ID: conv}}
	var msgs []*Message
	for _, text := range texts {
		id, err := c.a.NewID()
		if err != nil {
			return nil, err
		}
		n++
		now := c.a.Now()
		body := &content.Text{N: n, Text: text}
		if err := c.a.Seal(tx, k, s, &content.Content{ID: id, Sent: now.UnixMilli(), Body: body}); err != nil {
			return nil, err
		}
		enc, err := content.EncodeBody(body)
		if err != nil {
			return nil, err
		}
		m := &localstore.Message{ID: id, Conversation: conv.ID, Sender: localstore.SenderSelf, Sent: time.UnixMilli(now.UnixMilli()),
			State: localstore.Queued, Kind: int(content.KindText), Body: enc, N: n, Timer: conv.Timer.Seconds}
		if m.Timer > 0 {
			m.Expires = m.Sent.Add(time.Duration(m.Timer) * time.Second)
		}
		if _, err := tx.InsertMessage(m); err != nil {
			return nil, err
		}
		msgs = append(msgs, names.message(m))
	}
	if err := tx.SetCounter(conv.ID, localstore.SenderSelf, n); err != nil {
		return nil, err
	}
	return msgs, saveContactSession(tx, k, s)
}

// direct loads what sending in a direct conversation needs: the contact
// (who must be able to receive), its session and the user's counter.
func (c *Client) direct(tx *localstore.Tx, conv *localstore.Conversation) (*localstore.Contact, *session.Session, uint64, error) {
	k, err := tx.Contact(conv.Contact)
	if err != nil {
		return nil, nil, 0, err
	}
	if err := canSend(k); err != nil {
		return nil, nil, 0, err
	}
	s, err := c.a.Session(k)
	if err != nil {
		return nil, nil, 0, err
	}
	n, err := tx.Counter(conv.ID, localstore.SenderSelf)
	return k, s, n, err
}

// canSend fails, in one sentence, if nothing sent to k could reach it.
func canSend(k *localstore.Contact) error {
	switch {
	case k.Blocked:
		return fmt.Errorf("you blocked %s; unblock them to send", k.Name)
	case k.Status == localstore.Refused:
		return fmt.Errorf("%s's Ferry refused you as a contact; ask %s for a new invite", k.Name, k.Name)
	}
	return nil
}

func saveContactSession(tx *localstore.Tx, k *localstore.Contact, s *session.Session) error {
	if err := account.SaveSession(k, s); err != nil {
		return err
	}
	return tx.PutContact(k)
}

// Flush delivers whatever waits in the outbox and returns how many
// envelopes are still queued. It returns an error wrapping ErrUnreachable
// (saying why) if a relay could not be reached.
func (c *Client) Flush(ctx context.Context) (int, error) {
	res, err := c.ob.Flush(ctx)
	if err == nil && res.Unreachable != nil {
		err = res.Unreachable
	}
	return res.Left, err
}

// Queued returns how many envelopes wait in the outbox.
func (c *Client) Queued(ctx context.Context) (int, error) {
	var n int
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) (err error) { n, err = tx.OutboxLen(); return })
	return n, err
}

// queueGroupTexts seals texts for a group (one envelope each, for every
// member) and stores them.
func (c *Client) queueGroupTexts(tx *localstore.Tx, conv *localstore.Conversation, texts []string) ([]*Message, error) {
	g, sg, err := c.group(tx, ConversationID(conv.ID), false)
	if err != nil {
		return nil, err
	}
	names, err := loadNames(tx)
	if err != nil {
		return nil, err
	}
	var msgs []*Message
	for _, text := range texts {
		m, err := c.sendGroup(tx, g, sg, &content.Text{Text: text})
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, names.message(m))
	}
	return msgs, c.saveGroup(tx, g, sg)
}
