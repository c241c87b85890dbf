package localstore

import (
	"database/sql"
	"errors"
	"fmt"
	"strconv"
)

// ConversationKind says who takes part in a conversation.
type ConversationKind int

// Conversation kinds.
const (
	Direct ConversationKind = 1 // the user and one contact
	Group  ConversationKind = 2 // the user and a group's members
)

// Conversation is one conversation. ID, Kind and Contact are stored in the
// clear; Name is sealed.
type Conversation struct {
	ID      int64            `json:"-"`
	Kind    ConversationKind `json:"-"`
	Contact int64            `json:"-"` // Direct: the contact
	// Name names a group; a direct conversation takes its contact's name.
	Name string `json:"name,omitempty"`
	// Timer is the disappearing-message timer; Steps are, per contact,
	// the counters from which that contact's messages had another timer
	// (docs/protocol.md section 8.1).
	Timer TimerState            `json:"timer,omitzero"`
	Steps map[int64][]TimerStep `json:"steps,omitempty"`
	// Told, in a group, is the timer change the user last sent there
	// (set or took up): when Timer is newer, the user's next ordered
	// message is preceded by a timer taking it up.
	Told TimerState `json:"told,omitzero"`
}

func conversationAD(id int64) string { return "conversations|data|" + strconv.FormatInt(id, 10) }

// Senders other than contacts, in messages and counters.
const (
	SenderSelf  int64 = 0  // the user: an outgoing message
	SenderFerry int64 = -1 // the client itself: a notice
)

// PutConversation inserts c (when c.ID is 0, setting c.ID) or replaces it.
func (t *Tx) PutConversation(c *Conversation) error {
	return t.putSealed("conversations", &c.ID, conversationAD, c,
		`INSERT INTO conversations (kind, contact, data) VALUES (?, ?, x'')`, int(c.Kind), c.Contact)
}

// Conversations returns every conversation in the order they were made.
func (t *Tx) Conversations() ([]*Conversation, error) {
	return t.queryConversations(`SELECT id, kind, contact, data FROM conversations ORDER BY id`)
}

// Conversation returns the conversation with the given id, or ErrNotFound.
func (t *Tx) Conversation(id int64) (*Conversation, error) {
	return t.oneConversation(`SELECT id, kind, contact, data FROM conversations WHERE id = ?`, id)
}

// DirectConversation returns the direct conversation with a contact, or
// ErrNotFound.
func (t *Tx) DirectConversation(contact int64) (*Conversation, error) {
	return t.oneConversation(`SELECT id, kind, contact, data FROM conversations WHERE contact = ? AND kind = ?`, contact, int(Direct))
}

func (t *Tx) oneConversation(query string, args ...any) (*Conversation, error) {
	cs, err := t.queryConversations(query, args...)
	if err != nil {
		return nil, err
	}
	if len(cs) == 0 {
		return nil, ErrNotFound
	}
	return cs[0], nil
}

func (t *Tx) queryConversations(query string, args ...any) ([]*Conversation, error) {
	rows, err := t.query(query, args...)
	if err != nil {
		return nil, fmt.Errorf("read conversations: %w", err)
	}
	defer rows.Close()
	var out []*Conversation
	for rows.Next() {
		var c Conversation
		var kind int
		var sealed []byte
		if err := rows.Scan(&c.ID, &kind, &c.Contact, &sealed); err != nil {
			return nil, fmt.Errorf("read conversations: %w", err)
		}
		if err := t.openJSON(conversationAD(c.ID), sealed, &c); err != nil {
			return nil, err
		}
		c.Kind = ConversationKind(kind)
		out = append(out, &c)
	}
	return out, rows.Err()
}

// DeleteConversation deletes a conversation with its messages and
// counters.
func (t *Tx) DeleteConversation(id int64) error {
	for _, q := range []string{
		`DELETE FROM messages WHERE conversation = ?`,
		`DELETE FROM annotations WHERE conversation = ?`,
		`DELETE FROM counters WHERE conversation = ?`,
		`DELETE FROM conversations WHERE id = ?`,
	} {
		if _, err := t.exec(q, id); err != nil {
			return fmt.Errorf("delete conversation: %w", err)
		}
	}
	t.erased = true
	return nil
}

// Counter returns a sender's counter in a conversation (0 if unset): for
// SenderSelf, the last ordered message the user sent; for a contact, how
// far that contact's messages were shown in order.
func (t *Tx) Counter(conversation, sender int64) (uint64, error) {
	var n int64
	err := t.queryRow(`SELECT n FROM counters WHERE conversation = ? AND sender = ?`, conversation, sender).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read counter: %w", err)
	}
	return uint64(n), nil
}

// SetCounter sets a sender's counter in a conversation.
func (t *Tx) SetCounter(conversation, sender int64, n uint64) error {
	if _, err := t.exec(`INSERT OR REPLACE INTO counters (conversation, sender, n) VALUES (?, ?, ?)`,
		conversation, sender, int64(n)); err != nil {
		return fmt.Errorf("write counter: %w", err)
	}
	return nil
}

// Read is 3 in the SQL of Unread and of the index messages_unread.
const _ = uint(Read-3) + uint(3-Read)

// Unread returns, per conversation, how many incoming messages (notices
// included) have not been shown.
func (t *Tx) Unread() (map[int64]int, error) {
	// The literal 3 (Read) lets SQLite use the partial index messages_unread.
	rows, err := t.query(`SELECT conversation, count(*) FROM messages
		WHERE sender != 0 AND state < 3 AND held = 0 GROUP BY conversation`)
	if err != nil {
		return nil, fmt.Errorf("count unread: %w", err)
	}
	defer rows.Close()
	out := make(map[int64]int)
	for rows.Next() {
		var conv int64
		var n int
		if err := rows.Scan(&conv, &n); err != nil {
			return nil, fmt.Errorf("count unread: %w", err)
		}
		out[conv] = n
	}
	return out, rows.Err()
}
