package ferry

import (
	"context"
	"encoding/hex"
	"time"

	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/session"
)

// State is a message's delivery state. Outgoing messages move through
// queued, sent (the contact's relay has it), delivered (the contact's
// client stored it) and read (the contact was shown it); incoming messages
// are delivered until the user reads them. failed means the relay refused
// the message for good.
type State int

// Message states, in order.
const (
	StateQueued    = State(localstore.Queued)
	StateSent      = State(localstore.Sent)
	StateDelivered = State(localstore.Delivered)
	StateRead      = State(localstore.Read)
	StateFailed    = State(localstore.Failed)
)

func (s State) String() string { return localstore.State(s).String() }

// Message is one text message, incoming or outgoing.
type Message struct {
	// ID is the message id chosen by its sender; the same on both sides.
	ID [16]byte
	// Seq orders messages in the local history (arrival order).
	Seq      int64
	Contact  string // the conversation's contact name
	Outgoing bool
	Sent     time.Time // as claimed by the sender
	Received time.Time // when it was stored here (zero for outgoing)
	State    State
	Text     string
}

// IDString returns the message id in hex.
func (m *Message) IDString() string { return hex.EncodeToString(m.ID[:]) }

func publicMessage(m *localstore.Message, contact string) *Message {
	return &Message{
		ID: m.ID, Seq: m.Seq, Contact: contact, Outgoing: m.Outgoing,
		Sent: m.Sent, Received: m.Received, State: State(m.State), Text: m.Text,
	}
}

// Query selects messages from the history.
type Query struct {
	// Contact, if set, selects one conversation.
	Contact string
	// After selects messages with Seq greater than it.
	After int64
	// Unread selects incoming messages that arrived after the last
	// MarkShown (what "ferry read" prints). It overrides After.
	Unread bool
	// Last, if positive, returns only the last Last messages.
	Last int
}

// Messages returns the messages matching q in arrival order.
func (c *Client) Messages(ctx context.Context, q Query) ([]*Message, error) {
	var out []*Message
	err := c.store.Update(ctx, func(tx *localstore.Tx) error {
		out = nil
		ks, err := tx.Contacts()
		if err != nil {
			return err
		}
		names := make(map[int64]string, len(ks))
		for _, k := range ks {
			names[k.ID] = k.Name
		}
		lq := localstore.MessageQuery{After: q.After}
		if q.Contact != "" {
			k, err := findContact(tx, q.Contact)
			if err != nil {
				return err
			}
			lq.Contact = k.ID
		}
		if q.Unread {
			if lq.After, err = tx.Cursor(readCursor); err != nil {
				return err
			}
			lq.Incoming = true
		}
		if q.Last > 0 {
			lq.Limit, lq.Last = q.Last, true
		}
		ms, err := tx.Messages(lq)
		if err != nil {
			return err
		}
		for _, m := range ms {
			out = append(out, publicMessage(m, names[m.Contact]))
		}
		return nil
	})
	return out, err
}

const readCursor = "read"

// MarkShown records that the user was shown msgs: the incoming ones become
// read, read receipts are queued for their senders, and Query.Unread starts
// after the last of them. It then delivers the outbox, best effort (the
// receipts stay queued if a relay cannot be reached).
func (c *Client) MarkShown(ctx context.Context, msgs []*Message) error {
	byContact := make(map[string][][16]byte)
	var order []string
	var last int64
	for _, m := range msgs {
		last = max(last, m.Seq)
		if m.Outgoing || m.State >= StateRead {
			continue
		}
		if _, ok := byContact[m.Contact]; !ok {
			order = append(order, m.Contact)
		}
		byContact[m.Contact] = append(byContact[m.Contact], m.ID)
	}
	err := c.store.Update(ctx, func(tx *localstore.Tx) error {
		cur, err := tx.Cursor(readCursor)
		if err != nil {
			return err
		}
		if last > cur {
			if err := tx.SetCursor(readCursor, last); err != nil {
				return err
			}
		}
		for _, name := range order {
			k, err := findContact(tx, name)
			if err != nil {
				continue // renamed or gone: no receipt
			}
			var fresh [][16]byte
			for _, id := range byContact[name] {
				moved, err := tx.AdvanceState(id, k.ID, localstore.Read)
				if err != nil {
					return err
				}
				if moved {
					fresh = append(fresh, id)
				}
			}
			if err := c.queueReceipt(tx, k, nil, ReceiptRead, fresh); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if !m.Outgoing && m.State < StateRead {
			m.State = StateRead
		}
	}
	if len(order) > 0 {
		if _, err := c.flush(ctx); err != nil {
			c.log.Info("read receipts stay queued", "err", err)
		}
	}
	return nil
}

// queueReceipt encrypts a receipt for ids to contact k and queues it. If s
// is nil the contact's session is loaded and saved here; otherwise the
// caller owns s and saves it.
func (c *Client) queueReceipt(tx *localstore.Tx, k *localstore.Contact, s *session.Session, status byte, ids [][16]byte) error {
	if len(ids) == 0 {
		return nil
	}
	own := s == nil
	if own {
		var err error
		if s, err = c.loadSession(k); err != nil {
			return err
		}
	}
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), maxReceiptIDs)]
		ids = ids[len(chunk):]
		id, err := c.newID()
		if err != nil {
			return err
		}
		ct := &content{Kind: KindReceipt, ID: id, Sent: c.now().UnixMilli(), Status: status, IDs: chunk}
		if err := c.encryptTo(tx, k, s, ct); err != nil {
			return err
		}
	}
	if own {
		if err := saveSession(k, s); err != nil {
			return err
		}
		return tx.PutContact(k)
	}
	return nil
}
