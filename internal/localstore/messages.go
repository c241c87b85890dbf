package localstore

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"time"
)

// State is a message's delivery state. Outgoing messages move
// Queued -> Sent -> Delivered -> Read; incoming ones are stored as
// Delivered and become Read once shown.
type State int

// States, in order: a state never moves backwards. Failed is terminal: the
// relay refused the message for good (unknown mailbox, wrong token, too
// large), or the recipient's Ferry refused the introduction it followed.
const (
	Queued    State = 0
	Sent      State = 1
	Delivered State = 2
	Read      State = 3
	Failed    State = 4
)

func (s State) String() string {
	switch s {
	case Queued:
		return "queued"
	case Sent:
		return "sent"
	case Delivered:
		return "delivered"
	case Read:
		return "read"
	case Failed:
		return "failed"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// KindNotice is the kind of a notice: a message the client itself stored
// for the user. Content kinds are bytes, so no message from a contact can
// have it.
const KindNotice = 0x100

// Message is one message of a conversation. Body is sealed at rest; the
// other fields are stored in the clear.
type Message struct {
	Seq          int64 // local order of arrival, assigned by InsertMessage
	ID           [16]byte
	Conversation int64
	// Sender is the contact who wrote the message, SenderSelf for the
	// user's own (outgoing) messages, SenderFerry for notices.
	Sender   int64
	Sent     time.Time
	Received time.Time // zero for outgoing messages
	State    State
	// Kind is the content kind of Body, or KindNotice.
	Kind int
	// Body is the content body's encoding (package content), opaque here.
	Body []byte
	// N is the sender's counter of an ordered message (0 if none).
	N uint64
	// Held marks an incoming message kept back until the ones before it
	// arrive; Messages does not return held messages.
	Held bool
	// Timer is the disappearing-message timer the message was sent with,
	// in seconds (0: it stays); Expires is when it disappears (zero: not
	// yet decided, or never). Messages does not return expired messages.
	Timer   int64
	Expires time.Time
}

// Outgoing reports whether the user sent m.
func (m *Message) Outgoing() bool { return m.Sender == SenderSelf }

func messageAD(id [16]byte) string { return "messages|body|" + hex.EncodeToString(id[:]) }

// InsertMessage stores m and sets m.Seq. It reports false, and changes
// nothing, if a message with the same id exists.
func (t *Tx) InsertMessage(m *Message) (bool, error) {
	body, err := t.s.seal.seal(messageAD(m.ID), m.Body)
	if err != nil {
		return false, err
	}
	var recv int64
	if !m.Received.IsZero() {
		recv = m.Received.UnixMilli()
	}
	res, err := t.exec(`INSERT OR IGNORE INTO messages (id, conversation, sender, sent, received, state, kind, n, held, body, timer, expires)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, m.ID[:], m.Conversation, m.Sender, m.Sent.UnixMilli(), recv, int(m.State), m.Kind, int64(m.N), m.Held, body,
		m.Timer, unixMilliOrZero(m.Expires))
	if err != nil {
		return false, fmt.Errorf("insert message: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, nil
	}
	m.Seq, err = res.LastInsertId()
	return err == nil, err
}

// AdvanceState moves the message with the given id in conversation (any
// conversation if 0) to state s if it is in an earlier state, and reports
// whether it moved. It moves only the user's own messages if outgoing is
// set, else only the others'. Unknown ids are ignored.
func (t *Tx) AdvanceState(id [16]byte, conversation int64, outgoing bool, s State) (bool, error) {
	cond := `sender != 0`
	if outgoing {
		cond = `sender = 0`
	}
	args := []any{int(s), id[:], int(s)}
	if conversation != 0 {
		cond += ` AND conversation = ?`
		args = append(args, conversation)
	}
	res, err := t.exec(`UPDATE messages SET state = ? WHERE id = ? AND state < ? AND `+cond, args...)
	if err != nil {
		return false, fmt.Errorf("update message state: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// MessageQuery selects messages. Zero fields do not filter.
type MessageQuery struct {
	After        int64 // only messages with Seq > After
	Before       int64 // only messages with Seq < Before
	Conversation int64 // only this conversation
	Incoming     bool  // only messages the user did not write
	Limit        int   // at most this many (the most recent ones when Last is set)
	Last         bool  // take the last Limit messages instead of the first
	// Now, if set, leaves out the messages that expired by then.
	Now time.Time
}

// Messages returns the messages matching q in Seq order, leaving out held
// ones.
func (t *Tx) Messages(q MessageQuery) ([]*Message, error) {
	query := `SELECT ` + messageColumns + ` FROM messages WHERE seq > ? AND held = 0`
	args := []any{q.After}
	if q.Before > 0 {
		query += ` AND seq < ?`
		args = append(args, q.Before)
	}
	if q.Conversation != 0 {
		query += ` AND conversation = ?`
		args = append(args, q.Conversation)
	}
	if q.Incoming {
		query += ` AND sender != 0`
	}
	if !q.Now.IsZero() {
		query += ` AND (expires = 0 OR expires > ?)`
		args = append(args, q.Now.UnixMilli())
	}
	if q.Last {
		query += ` ORDER BY seq DESC`
	} else {
		query += ` ORDER BY seq`
	}
	if q.Limit > 0 {
		query += ` LIMIT ?`
		args = append(args, q.Limit)
	}
	out, err := t.queryMessages(query, args...)
	if err != nil {
		return nil, err
	}
	if q.Last {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out, nil
}

// HeldMessages returns the held messages of one sender in a conversation,
// in counter order.
func (t *Tx) HeldMessages(conversation, sender int64) ([]*Message, error) {
	return t.queryMessages(`SELECT `+messageColumns+` FROM messages WHERE held = 1 AND conversation = ? AND sender = ? ORDER BY n`,
		conversation, sender)
}

// AllHeld returns every held message, by conversation, sender and counter.
func (t *Tx) AllHeld() ([]*Message, error) {
	return t.queryMessages(`SELECT ` + messageColumns + ` FROM messages WHERE held = 1 ORDER BY conversation, sender, n`)
}

// Release makes a held message visible as the newest message (a new Seq),
// so that it is shown after the ones that were missing before it.
func (t *Tx) Release(m *Message) error {
	if _, err := t.exec(`DELETE FROM messages WHERE id = ?`, m.ID[:]); err != nil {
		return fmt.Errorf("release message: %w", err)
	}
	m.Held = false
	ok, err := t.InsertMessage(m)
	if err == nil && !ok {
		err = fmt.Errorf("release message: %w", ErrCorrupt)
	}
	return err
}

const messageColumns = `seq, id, conversation, sender, sent, received, state, kind, n, held, body, timer, expires`

func (t *Tx) queryMessages(query string, args ...any) ([]*Message, error) {
	rows, err := t.query(query, args...)
	if err != nil {
		return nil, fmt.Errorf("read messages: %w", err)
	}
	defer rows.Close()
	var out []*Message
	for rows.Next() {
		m := new(Message)
		var id, body []byte
		var sent, recv, n, expires int64
		var state int
		if err := rows.Scan(&m.Seq, &id, &m.Conversation, &m.Sender, &sent, &recv, &state, &m.Kind, &n, &m.Held, &body, &m.Timer, &expires); err != nil {
			return nil, fmt.Errorf("read messages: %w", err)
		}
		if len(id) != 16 {
			return nil, ErrCorrupt
		}
		m.ID = [16]byte(id)
		m.Sent = time.UnixMilli(sent)
		if recv != 0 {
			m.Received = time.UnixMilli(recv)
		}
		m.State = State(state)
		m.N = uint64(n)
		if expires != 0 {
			m.Expires = time.UnixMilli(expires)
		}
		if m.Body, err = t.s.seal.open(messageAD(m.ID), body); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read messages: %w", err)
	}
	return out, nil
}

// Notice codes of the notices more than one package stores (the first
// byte of a notice's body); the inbox keeps its own (1 to 4).
const (
	// NoticeUndelivered: a relay refused one of the user's messages for
	// good; the message is Failed.
	NoticeUndelivered byte = 5
	// NoticeRegistered: the user's relay had lost the user's mailbox
	// and the client registered it again.
	NoticeRegistered byte = 6
)

// InsertNotice stores a notice (a message from Ferry itself, never from a
// contact) with id in conversation conv at now: body = code(1) || text.
func (t *Tx) InsertNotice(id [16]byte, conv int64, now time.Time, code byte, text string) (*Message, error) {
	m := &Message{
		ID: id, Conversation: conv, Sender: SenderFerry, Sent: now, Received: now,
		State: Delivered, Kind: KindNotice, Body: append([]byte{code}, text...),
	}
	_, err := t.InsertMessage(m)
	return m, err
}
