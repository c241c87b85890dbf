package ferry

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
)

// State is a message's delivery state. Outgoing messages move through
// queued, sent (the recipient's relay has it), delivered (the recipient's
// client stored it) and read (the recipient was shown it); incoming
// messages are delivered until the user is shown them, then read. Failed
// means the message will never arrive: the relay refused it for good, or
// the recipient's Ferry refused the user as a contact.
type State int

// Message states, in order.
const (
	StateQueued State = iota + 1
	StateSent
	StateDelivered
	StateRead
	StateFailed
)

var stateNames = map[State]string{
	StateQueued: "queued", StateSent: "sent", StateDelivered: "delivered", StateRead: "read", StateFailed: "failed",
}

func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("state(%d)", int(s))
}

var fromStore = map[localstore.State]State{
	localstore.Queued: StateQueued, localstore.Sent: StateSent, localstore.Delivered: StateDelivered,
	localstore.Read: StateRead, localstore.Failed: StateFailed,
}

// Kind is what a message holds; its Body is of the kind's type.
type Kind int

// Message kinds.
const (
	// KindText is a text message: Body is *Text.
	KindText Kind = iota + 1
	// KindNotice is a notice from Ferry itself, never from a contact:
	// Body is *Notice.
	KindNotice
	// KindUnsupported is a message of a kind this Ferry does not know
	// (from a newer one): Body is *Unsupported.
	KindUnsupported
	// KindAttachment is a file, photo, video or voice note: Body is
	// *Attachment.
	KindAttachment
)

// Body is a message's kind-specific part: *Text, *Notice, *Unsupported
// or *Attachment.
type Body interface{ kind() Kind }

// TransferState says where an attachment is.
type TransferState int

// Transfer states.
const (
	// TransferPending: being uploaded (outgoing), or not downloaded yet
	// (incoming: too large to download by itself, or waiting its turn).
	TransferPending TransferState = iota + 1
	// TransferDone: at the relay (outgoing), or saved at Path (incoming).
	TransferDone
	// TransferFailed: it will not arrive; Err says why.
	TransferFailed
)

func (s TransferState) String() string {
	switch s {
	case TransferPending:
		return "pending"
	case TransferDone:
		return "done"
	case TransferFailed:
		return "failed"
	}
	return fmt.Sprintf("transfer(%d)", int(s))
}

// Attachment is the body of a file, photo, video or voice note.
type Attachment struct {
	// Name is the file's name as the sender gave it (never a path);
	// Type its MIME type; Size its length in bytes; SHA256 the SHA-256 of
	// its content, checked when it is downloaded.
	Name   string
	Type   string
	Size   int64
	SHA256 [32]byte
	// Thumb is a small JPEG of a photo or video, or nil.
	Thumb []byte
	// Voice is set for a voice note, with its Duration and Waveform
	// (levels 0-255 of how busy the audio is along the note).
	Voice    bool
	Duration time.Duration
	Waveform []byte
	// Transfer is where the attachment is; Path the local file (the one
	// sent, or where it was saved once downloaded); Err why it failed.
	Transfer TransferState
	Path     string
	Err      string

	outgoing bool
}

func (*Attachment) kind() Kind { return KindAttachment }

// Text is the body of a text message.
type Text struct{ Text string }

// NoticeCode says what a notice is about.
type NoticeCode int

// Notice codes.
const (
	// NoticeNewContact: someone accepted the user's invite.
	NoticeNewContact NoticeCode = 1
	// NoticeInviteReused: someone else came back with an invite a
	// contact had already used (the link was copied); Ferry refused them.
	NoticeInviteReused NoticeCode = 2
	// NoticeRefused: the contact's Ferry refused the user's introduction.
	NoticeRefused NoticeCode = 3
	// NoticeUndelivered: a relay refused messages to this conversation
	// for good; they are failed.
	NoticeUndelivered NoticeCode = 5
	// NoticeRegistered: the user's relay had lost the user's mailbox
	// (restored after damage, or cleaned up after a long absence) and
	// Ferry registered it again.
	NoticeRegistered NoticeCode = 6
)

// Notice is the body of a notice: what Ferry itself tells the user in a
// conversation.
type Notice struct {
	Code NoticeCode
	Text string
}

// Unsupported is the body of a message of a kind this Ferry does not know.
type Unsupported struct{ Kind byte }

func (*Text) kind() Kind        { return KindText }
func (*Notice) kind() Kind      { return KindNotice }
func (*Unsupported) kind() Kind { return KindUnsupported }

// Message is one message of a conversation, incoming or outgoing, or a
// notice.
type Message struct {
	// ID is the message id chosen by its sender; the same on both sides.
	ID [16]byte
	// Seq orders messages in the local history (arrival order).
	Seq              int64
	Conversation     ConversationID
	ConversationName string
	// Sender is the contact who wrote the message; 0 for the user's own
	// messages and for notices.
	Sender ContactID
	// From is the sender's name; empty for the user's own messages and
	// for notices.
	From     string
	Outgoing bool
	Sent     time.Time // as claimed by the sender
	Received time.Time // when it was stored here (zero for outgoing)
	State    State
	Kind     Kind
	Body     Body
	// Timer is the disappearing-message timer the message was sent with
	// (0: it stays); Expires is when it disappears here (zero while a
	// received one waits to be shown, or if it stays).
	Timer   time.Duration
	Expires time.Time
	// Edited is set when its sender edited it for everyone (Body holds
	// the latest text); Reactions are each person's latest reaction.
	Edited    bool
	Reactions []Reaction
}

// IDString returns the message id in hex.
func (m *Message) IDString() string { return hex.EncodeToString(m.ID[:]) }

// Text returns what to show for the message: its text, a notice's text,
// or a sentence saying it is of an unsupported kind.
func (m *Message) Text() string {
	switch b := m.Body.(type) {
	case *Text:
		return b.Text
	case *Notice:
		return b.Text
	case *Unsupported:
		return fmt.Sprintf("(a message of a kind this Ferry cannot show (%d); a newer Ferry can)", b.Kind)
	case *Attachment:
		return b.Summary()
	case *Reply:
		return b.Text
	case *TimerChange:
		if b.Timer == 0 {
			return "disappearing messages turned off"
		}
		return "disappearing messages set to " + FormatTimer(b.Timer)
	case *Deleted:
		return "this message was deleted"
	}
	return ""
}

// Summary describes the attachment in one line: "[voice note 0:04]",
// "[photo cat.jpg, 1.2 MB]", "[file report.pdf, 80 KB, downloading]".
func (a *Attachment) Summary() string {
	what := "file"
	switch {
	case a.Voice:
		secs := int(a.Duration.Round(time.Second) / time.Second)
		what = fmt.Sprintf("voice note %d:%02d", secs/60, secs%60)
	case strings.HasPrefix(a.Type, "image/"):
		what = "photo"
	case strings.HasPrefix(a.Type, "video/"):
		what = "video"
	case strings.HasPrefix(a.Type, "audio/"):
		what = "audio"
	}
	s := "[" + what
	if !a.Voice && a.Name != "" {
		s += " " + a.Name
	}
	s += ", " + humanBytes(a.Size)
	switch {
	case a.Transfer == TransferPending && a.outgoing:
		s += ", uploading"
	case a.Transfer == TransferPending:
		s += ", not downloaded yet"
	case a.Transfer == TransferFailed:
		s += ", failed: " + a.Err
	}
	return s + "]"
}

// message makes the API's message of a stored one, naming its
// conversation and sender from n.
func (n *names) message(m *localstore.Message) *Message {
	var from, conv string
	if c := n.byID[m.Conversation]; c != nil {
		conv = n.name(c)
	}
	if k := n.contacts[m.Sender]; k != nil && m.Sender > 0 {
		from = k.Name
	}
	out := messageOf(m, from, conv)
	if a, ok := out.Body.(*Attachment); ok {
		if tr := n.transfers[m.ID]; tr != nil {
			a.Transfer, a.Path, a.Err = TransferState(tr.State), tr.Path, tr.Err
			if tr.State != localstore.TransferDone && !m.Outgoing() {
				a.Path = ""
			}
		}
	}
	return out
}

// messageOf makes the API's message of a stored one, whose sender and
// conversation have the names given.
func messageOf(m *localstore.Message, from, conv string) *Message {
	out := &Message{
		ID: m.ID, Seq: m.Seq, Conversation: ConversationID(m.Conversation), ConversationName: conv, Outgoing: m.Outgoing(),
		Sent: m.Sent, Received: m.Received, State: fromStore[m.State],
	}
	if m.Sender > 0 {
		out.Sender, out.From = ContactID(m.Sender), from
	}
	out.Kind, out.Body = decodeBody(m)
	if a, ok := out.Body.(*Attachment); ok {
		// Until its transfer (names.message) says otherwise.
		a.Transfer, a.outgoing = TransferPending, m.Outgoing()
		if m.Outgoing() {
			a.Transfer = TransferDone
		}
	}
	if m.Timer > 0 {
		out.Timer, out.Expires = time.Duration(m.Timer)*time.Second, m.Expires
	}
	return out
}

func decodeBody(m *localstore.Message) (Kind, Body) {
	if m.Kind == localstore.KindNotice {
		if len(m.Body) == 0 {
			return KindNotice, &Notice{}
		}
		return KindNotice, &Notice{Code: NoticeCode(m.Body[0]), Text: string(m.Body[1:])}
	}
	if m.Kind > 0 && m.Kind < 256 {
		body, err := content.ParseBody(content.Kind(m.Kind), m.Body)
		switch b := body.(type) {
		case *content.Text:
			if err == nil {
				return KindText, &Text{Text: b.Text}
			}
		case *content.Attachment:
			if err == nil {
				return KindAttachment, &Attachment{Name: b.Name, Type: b.Type, Size: b.Pointer.Size, SHA256: b.SHA256,
					Thumb: b.Thumb, Voice: b.Voice, Duration: time.Duration(b.Duration) * time.Millisecond, Waveform: b.Waveform}
			}
		}
	}
	if k, b, ok := decodeFeature(m); ok {
		return k, b
	}
	return KindUnsupported, &Unsupported{Kind: byte(m.Kind)}
}

// Query selects messages from the history.
type Query struct {
	// Conversation, if set, selects one conversation.
	Conversation ConversationID
	// After selects messages with Seq greater than it; Before, if
	// positive, those with Seq less than it.
	After, Before int64
	// Unread selects incoming messages and notices that arrived after the
	// last MarkShown (what "ferry read" prints). It overrides After.
	Unread bool
	// Last, if positive, returns only the last Last messages.
	Last int
}

const readCursor = "read"

// Messages returns the messages matching q in arrival order.
func (c *Client) Messages(ctx context.Context, q Query) ([]*Message, error) {
	return c.read(ctx, func(tx *localstore.Tx) ([]*localstore.Message, error) {
		lq := localstore.MessageQuery{After: q.After, Before: q.Before, Conversation: int64(q.Conversation), Now: c.a.Now()}
		if q.Unread {
			var err error
			if lq.After, err = tx.Cursor(readCursor); err != nil {
				return nil, err
			}
			lq.Incoming = true
		}
		if q.Last > 0 {
			lq.Limit, lq.Last = q.Last, true
		}
		return tx.Messages(lq)
	})
}

// read returns the messages get reads, as the API's, in one transaction.
func (c *Client) read(ctx context.Context, get func(*localstore.Tx) ([]*localstore.Message, error)) ([]*Message, error) {
	var out []*Message
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		n, err := loadNames(tx)
		if err != nil {
			return err
		}
		ms, err := get(tx)
		if err != nil {
			return err
		}
		ms = slices.DeleteFunc(ms, isEcho)
		if err := n.loadTransfers(tx, ms); err != nil {
			return err
		}
		out = make([]*Message, len(ms))
		for i, m := range ms {
			out[i] = n.message(m)
		}
		return n.annotate(tx, ms, out, c.a.Now())
	})
	return out, err
}

// MarkShown records that the user was shown msgs: the incoming ones become
// read, read receipts are queued for their senders, and Query.Unread
// starts after the last of them. It then delivers the outbox, best effort
// (the receipts stay queued if a relay cannot be reached).
func (c *Client) MarkShown(ctx context.Context, msgs []*Message) error {
	var last int64
	byConv := make(map[ConversationID][]*Message)
	var order []ConversationID
	for _, m := range msgs {
		last = max(last, m.Seq)
		if m.Outgoing || m.State >= StateRead {
			continue
		}
		if _, ok := byConv[m.Conversation]; !ok {
			order = append(order, m.Conversation)
		}
		byConv[m.Conversation] = append(byConv[m.Conversation], m)
	}
	queued := false
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		if cur, err := tx.Cursor(readCursor); err != nil {
			return err
		} else if last > cur {
			if err := tx.SetCursor(readCursor, last); err != nil {
				return err
			}
		}
		for _, id := range order {
			q, err := c.markRead(tx, id, byConv[id])
			if err != nil {
				return err
			}
			queued = queued || q
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
	if queued {
		if _, err := c.ob.Flush(ctx); err != nil {
			c.a.Log.Info("read receipts stay queued", "err", err)
		}
	}
	return nil
}

// markRead marks msgs of one conversation read and queues a read receipt
// for those from its contact. It reports whether it queued one.
func (c *Client) markRead(tx *localstore.Tx, id ConversationID, msgs []*Message) (bool, error) {
	var fresh [][16]byte
	for _, m := range msgs {
		moved, err := tx.AdvanceState(m.ID, int64(id), false, localstore.Read)
		if err != nil {
			return false, err
		}
		if err := tx.StartTimer(m.ID, c.a.Now()); err != nil {
			return false, err
		}
		if moved && m.Kind != KindNotice {
			fresh = append(fresh, m.ID)
		}
	}
	if len(fresh) == 0 {
		return false, nil
	}
	conv, err := tx.Conversation(int64(id))
	if err != nil {
		return false, nil // gone: no receipt
	}
	k, err := tx.Contact(conv.Contact)
	if err != nil || k.Blocked || k.Status == localstore.Refused {
		return false, nil
	}
	// Batched and sent after a random delay (account.SealDueReceipts).
	c.a.DeferReceipt(k, content.ReceiptRead, fresh)
	return true, tx.PutContact(k)
}

// loadTransfers reads the transfers of the attachments among ms.
func (n *names) loadTransfers(tx *localstore.Tx, ms []*localstore.Message) error {
	for _, m := range ms {
		if m.Kind != int(content.KindAttachment) {
			continue
		}
		tr, err := tx.Transfer(m.ID)
		if errors.Is(err, localstore.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if n.transfers == nil {
			n.transfers = make(map[[16]byte]*localstore.Transfer)
		}
		n.transfers[m.ID] = tr
	}
	return nil
}
