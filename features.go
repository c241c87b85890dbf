package ferry

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ferry-im/ferry/internal/account"
	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/inbox"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/session"
)

// The conversation features (docs/protocol.md section 8): disappearing
// messages, replies, reactions, edits and deletes for everyone, typing.

// Kinds of the conversation features.
const (
	// KindReply is a text quoting an earlier message: Body is *Reply.
	KindReply Kind = iota + 100
	// KindTimer is a change of the conversation's disappearing-message
	// timer: Body is *TimerChange.
	KindTimer
	// KindDeleted is a message its sender deleted for everyone: Body is
	// *Deleted.
	KindDeleted
)

// Reply is the body of a reply.
type Reply struct {
	Text  string
	Quote Quote
}

// Quote is the message a reply quotes, as this device has it.
type Quote struct {
	ID [16]byte
	// Missing is set when this device does not have the quoted message
	// (never received, deleted or disappeared); the other fields are then
	// empty.
	Missing  bool
	From     string // the quoted message's sender; empty for the user
	Outgoing bool
	Text     string // its text, cut to 200 bytes
}

// TimerChange is the body of a timer change.
type TimerChange struct {
	Timer time.Duration // 0: off
}

// Deleted is the body of a message deleted for everyone.
type Deleted struct{}

func (*Reply) kind() Kind       { return KindReply }
func (*TimerChange) kind() Kind { return KindTimer }
func (*Deleted) kind() Kind     { return KindDeleted }

// Reaction is one person's reaction to a message.
type Reaction struct {
	Emoji    string
	From     string // empty for the user
	Outgoing bool
}

// EditWindow is how long after sending a message it may be edited or
// deleted for everyone.
const EditWindow = content.EditWindow

// MaxTimer is the longest disappearing-message timer.
const MaxTimer = content.MaxTimer * time.Second

// Errors of the conversation features.
var (
	// ErrNotYours means only a message's sender may edit or delete it for
	// everyone.
	ErrNotYours = errors.New("only the person who sent a message can edit or delete it for everyone")
	// ErrTooLate means the edit window of a message has passed.
	ErrTooLate = errors.New("a message can be edited or deleted for everyone only within 24 hours of sending it")
	// ErrNoMessage means no message of the conversation has the given id.
	ErrNoMessage = errors.New("no such message in this conversation; it may have been deleted or disappeared")
)

// decodeFeature decodes the bodies of the conversation features' kinds.
func decodeFeature(m *localstore.Message) (Kind, Body, bool) {
	if m.Kind == localstore.KindDeleted {
		return KindDeleted, &Deleted{}, true
	}
	body, err := content.ParseBody(content.Kind(m.Kind), m.Body)
	if err != nil {
		return 0, nil, false
	}
	switch b := body.(type) {
	case *content.Reply:
		return KindReply, &Reply{Text: b.Text, Quote: Quote{ID: b.Quote}}, true
	case *content.Timer:
		return KindTimer, &TimerChange{Timer: time.Duration(b.Seconds) * time.Second}, true
	}
	return 0, nil, false
}

// isEcho reports whether m is a timer change that its sender took up
// from the other side: stored to keep the order, never shown.
func isEcho(m *localstore.Message) bool {
	if m.Kind != int(content.KindTimer) {
		return false
	}
	body, err := content.ParseBody(content.KindTimer, m.Body)
	t, ok := body.(*content.Timer)
	return err == nil && ok && t.OriginID != m.ID
}

// annotate folds reactions, edits and quotes into msgs (the API's
// messages of ms), and starts the expiry of the shown ones.
func (n *names) annotate(tx *localstore.Tx, ms []*localstore.Message, msgs []*Message, now time.Time) error {
	ids := make([][16]byte, len(ms))
	byID := make(map[[16]byte]int, len(ms))
	for i, m := range ms {
		ids[i], byID[m.ID] = m.ID, i
	}
	as, err := tx.Annotations(ids)
	if err != nil {
		return err
	}
	for _, a := range as { // oldest first: the newest of each sender wins
		i := byID[a.Target]
		n.apply(ms[i], msgs[i], a)
	}
	for _, m := range msgs {
		if r, ok := m.Body.(*Reply); ok {
			if err := n.quote(tx, m, &r.Quote, now); err != nil {
				return err
			}
		}
	}
	return nil
}

// apply folds one annotation into a message.
func (n *names) apply(m *localstore.Message, out *Message, a *localstore.Annotation) {
	body, err := content.ParseBody(content.Kind(a.Kind), a.Body)
	if err != nil {
		return
	}
	switch b := body.(type) {
	case *content.Reaction:
		r := Reaction{Emoji: b.Emoji, Outgoing: a.Sender == localstore.SenderSelf}
		if k := n.contacts[a.Sender]; k != nil {
			r.From = k.Name
		}
		out.Reactions = append(out.Reactions, r)
	case *content.Edit:
		if !inbox.MayChange(m, a) {
			return
		}
		switch t := out.Body.(type) {
		case *Text:
			t.Text = b.Text
		case *Reply:
			t.Text = b.Text
		default:
			return
		}
		out.Edited = true
	}
}

// quote fills in the quoted message of a reply from this device's copy.
func (n *names) quote(tx *localstore.Tx, m *Message, q *Quote, now time.Time) error {
	qm, err := tx.Message(q.ID)
	if errors.Is(err, localstore.ErrNotFound) || (err == nil && (int64(m.Conversation) != qm.Conversation || qm.Held ||
		qm.Kind == localstore.KindDeleted || expired(qm, now))) {
		q.Missing = true
		return nil
	}
	if err != nil {
		return err
	}
	pm := n.message(qm)
	// The quote shows the latest edit.
	as, err := tx.Annotations([][16]byte{qm.ID})
	if err != nil {
		return err
	}
	for _, a := range as {
		n.apply(qm, pm, a)
	}
	q.From, q.Outgoing, q.Text = pm.From, pm.Outgoing, cut(pm.Text(), 200)
	return nil
}

// cut shortens s to at most max bytes on a rune boundary, marking the cut.
func cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !isRuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

func isRuneStart(b byte) bool { return b&0xc0 != 0x80 }

// sender queues what the conversation features send in one
// conversation: to its contact over the pairwise session, or to its group
// under the group's sender keys.
type sender struct {
	c  *Client
	k  *localstore.Contact // a direct conversation's
	s  *session.Session
	g  *localstore.GroupState // a group's
	sg *session.Group
}

// ordered queues a body that takes the user's next counter; body gets the
// header chosen for it (in a group, the counter is set by sendGroup).
func (x *sender) ordered(tx *localstore.Tx, conv int64, body func(h account.Header) content.Body, timer int64) (*localstore.Message, error) {
	if x.g == nil {
		return x.c.a.SendOrdered(tx, x.k, x.s, conv, body, timer)
	}
	return x.c.sendGroupWith(tx, x.g, x.sg, body) // the group's timer
}

// unordered queues a body that takes no place in the history and returns
// its id and time.
func (x *sender) unordered(tx *localstore.Tx, b content.Body) ([16]byte, time.Time, error) {
	if x.g == nil {
		return x.c.a.SendUnordered(tx, x.k, x.s, b)
	}
	m, err := x.c.sendGroup(tx, x.g, x.sg, b)
	if err != nil {
		return [16]byte{}, time.Time{}, err
	}
	return m.ID, m.Sent, nil
}

// save keeps the session or the group keys the sends advanced.
func (x *sender) save(tx *localstore.Tx) error {
	if x.g == nil {
		return saveContactSession(tx, x.k, x.s)
	}
	return x.c.saveGroup(tx, x.g, x.sg)
}

// peerTx runs fn in one transaction with the sender of a conversation,
// then delivers the outbox. fn returns the ids of the envelopes it queued;
// peerTx returns ErrQueued if any of them could not be delivered yet.
func (c *Client) peerTx(ctx context.Context, id ConversationID, fn func(tx *localstore.Tx, conv *localstore.Conversation, x *sender) ([][16]byte, error)) error {
	var ids [][16]byte
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		conv, err := conversation(tx, id)
		if err != nil {
			return err
		}
		x := &sender{c: c}
		if conv.Kind == localstore.Group {
			x.g, x.sg, err = c.group(tx, id, false)
		} else {
			x.k, x.s, _, err = c.direct(tx, conv)
		}
		if err != nil {
			return err
		}
		if ids, err = fn(tx, conv, x); err != nil {
			return err
		}
		return x.save(tx)
	})
	if err != nil {
		return err
	}
	return c.flushIDs(ctx, ids)
}

// flushIDs delivers the outbox and returns ErrQueued if an envelope of ids
// still waits in it, or was refused for good (its message failed), as
// Send always has. (Another flush, of this process's Sync or of another
// process, may have delivered some of them first: they count as sent.)
func (c *Client) flushIDs(ctx context.Context, ids [][16]byte) error {
	res, err := c.ob.Flush(ctx)
	if err != nil {
		return err
	}
	left, refused := false, ""
	err = c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		for _, id := range ids {
			if res.Sent[id] {
				continue
			}
			if why, ok := res.Failed[id]; ok {
				refused = cmp.Or(refused, why)
				continue
			}
			in, err := tx.InOutbox(id)
			if err != nil {
				return err
			}
			// Not sent here and not waiting: another flush sent it, or
			// refused it for good (the message is then failed).
			m, err := tx.Message(id)
			if err == nil && m.State == localstore.Failed {
				refused = cmp.Or(refused, "a relay refused it")
			}
			left = left || in
		}
		return nil
	})
	switch {
	case err != nil:
		return err
	case refused != "":
		return fmt.Errorf("%w: %s", ErrRefused, refused)
	case left:
		return queued(res.Unreachable)
	}
	return nil
}

// Reply sends text quoting the message quote of the same conversation.
func (c *Client) Reply(ctx context.Context, conv ConversationID, quote [16]byte, text string) (*Message, error) {
	if err := checkText(text); err != nil {
		return nil, err
	}
	var out *Message
	err := c.peerTx(ctx, conv, func(tx *localstore.Tx, lc *localstore.Conversation, x *sender) ([][16]byte, error) {
		if _, err := messageIn(tx, lc.ID, quote); err != nil {
			return nil, err
		}
		m, err := x.ordered(tx, lc.ID, func(h account.Header) content.Body {
			return &content.Reply{N: h.N, Quote: quote, Text: text}
		}, lc.Timer.Seconds)
		if err != nil {
			return nil, err
		}
		out, err = c.publicMessage(tx, m)
		return [][16]byte{m.ID}, err
	})
	if out != nil && err == nil {
		out.State = StateSent
	}
	return out, err
}

func checkText(t string) error {
	if len(t) > MaxText {
		return fmt.Errorf("message of %d bytes is longer than the limit of %d", len(t), MaxText)
	}
	if strings.TrimSpace(t) == "" {
		return ErrEmpty
	}
	return nil
}

// messageIn returns the message id of conversation conv.
func messageIn(tx *localstore.Tx, conv int64, id [16]byte) (*localstore.Message, error) {
	m, err := tx.Message(id)
	if errors.Is(err, localstore.ErrNotFound) || (err == nil && m.Conversation != conv) {
		return nil, ErrNoMessage
	}
	return m, err
}

// publicMessage makes the API's message of one stored in tx.
func (c *Client) publicMessage(tx *localstore.Tx, m *localstore.Message) (*Message, error) {
	n, err := loadNames(tx)
	if err != nil {
		return nil, err
	}
	if err := n.loadTransfers(tx, []*localstore.Message{m}); err != nil {
		return nil, err
	}
	out := n.message(m)
	return out, n.annotate(tx, []*localstore.Message{m}, []*Message{out}, c.a.Now())
}

// React sends the user's reaction to a message of the conversation,
// replacing the user's earlier one; an empty emoji takes it back.
func (c *Client) React(ctx context.Context, conv ConversationID, target [16]byte, emoji string) error {
	r := &content.Reaction{Target: target, Emoji: emoji}
	if _, err := content.EncodeBody(r); err != nil {
		return errors.New("a reaction is one emoji (at most 64 bytes)")
	}
	return c.annotate(ctx, conv, target, r, nil)
}

// Edit replaces the text of one of the user's messages (a text or a
// reply) for everyone, within EditWindow of sending it.
func (c *Client) Edit(ctx context.Context, conv ConversationID, target [16]byte, text string) error {
	if err := checkText(text); err != nil {
		return err
	}
	return c.annotate(ctx, conv, target, &content.Edit{Target: target, Text: text}, c.mayChange)
}

// DeleteForEveryone deletes one of the user's messages on both sides,
// within EditWindow of sending it: its text is erased here at once and
// on the contact's device when it receives the delete.
// docs/protocol.md section 8.4 says what deletion cannot promise.
func (c *Client) DeleteForEveryone(ctx context.Context, conv ConversationID, target [16]byte) error {
	return c.annotate(ctx, conv, target, &content.Delete{Target: target}, c.mayChange)
}

// mayChange fails unless the user may edit or delete m for everyone.
func (c *Client) mayChange(m *localstore.Message) error {
	switch {
	case m.Sender != localstore.SenderSelf:
		return ErrNotYours
	case m.Kind == localstore.KindDeleted:
		return ErrNoMessage
	case m.Kind != int(content.KindText) && m.Kind != int(content.KindReply):
		return errors.New("only texts and replies can be edited or deleted for everyone")
	case c.a.Now().Sub(m.Sent) > EditWindow:
		return ErrTooLate
	}
	return nil
}

// annotate sends an annotation of target and stores it as the user's own.
func (c *Client) annotate(ctx context.Context, conv ConversationID, target [16]byte, body content.Body, check func(*localstore.Message) error) error {
	return c.peerTx(ctx, conv, func(tx *localstore.Tx, lc *localstore.Conversation, x *sender) ([][16]byte, error) {
		m, err := messageIn(tx, lc.ID, target)
		if err != nil {
			return nil, err
		}
		if check != nil {
			if err := check(m); err != nil {
				return nil, err
			}
		}
		id, sent, err := x.unordered(tx, body)
		if err != nil {
			return nil, err
		}
		enc, err := content.EncodeBody(body)
		if err != nil {
			return nil, err
		}
		return [][16]byte{id}, inbox.Annotate(tx, &localstore.Annotation{ID: id, Conversation: lc.ID, Target: target,
			Sender: localstore.SenderSelf, Kind: int(body.Kind()), Sent: sent, Body: enc})
	})
}

// SetTimer sets the conversation's disappearing-message timer (0 turns it
// off) on both sides: the user's messages sent from now on, and the
// contact's sent once its Ferry has the change, disappear d after they
// were sent (on the sender's device) or first shown (on the receiver's).
// It is rounded down to whole seconds.
func (c *Client) SetTimer(ctx context.Context, conv ConversationID, d time.Duration) error {
	if d < 0 || d > MaxTimer || (d > 0 && d < time.Second) {
		return fmt.Errorf("a disappearing-message timer is between 1 second and %d days, or off", content.MaxTimer/86400)
	}
	secs := uint32(d / time.Second)
	return c.peerTx(ctx, conv, func(tx *localstore.Tx, lc *localstore.Conversation, x *sender) ([][16]byte, error) {
		m, err := x.ordered(tx, lc.ID, func(h account.Header) content.Body {
			return &content.Timer{N: h.N, Seconds: secs, OriginSent: h.Sent.UnixMilli(), OriginID: h.ID}
		}, 0)
		if err != nil {
			return nil, err
		}
		// Read again: in a group, sending recorded what was told.
		if lc, err = tx.Conversation(lc.ID); err != nil {
			return nil, err
		}
		lc.Timer = localstore.TimerState{Seconds: int64(secs), OriginSent: m.Sent.UnixMilli(), OriginID: m.ID}
		return [][16]byte{m.ID}, tx.PutConversation(lc)
	})
}

// Timer returns the conversation's disappearing-message timer.
func (c *Client) Timer(ctx context.Context, conv ConversationID) (time.Duration, error) {
	var d time.Duration
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		lc, err := conversation(tx, conv)
		if err == nil {
			d = time.Duration(lc.Timer.Seconds) * time.Second
		}
		return err
	})
	return d, err
}

// Typing tells the contact of a direct conversation that the user started
// (on) or stopped typing, unless typing indicators are off. It does not
// wait for the relay.
func (c *Client) Typing(ctx context.Context, conv ConversationID, on bool) error {
	if enabled, err := c.TypingIndicators(ctx); err != nil || !enabled {
		return err
	}
	state := content.TypingStopped
	if on {
		state = content.TypingStarted
	}
	err := c.peerTx(ctx, conv, func(tx *localstore.Tx, _ *localstore.Conversation, x *sender) ([][16]byte, error) {
		id, _, err := x.unordered(tx, &content.Typing{State: state})
		return [][16]byte{id}, err
	})
	if errors.Is(err, ErrQueued) {
		return nil
	}
	return err
}

// TypingIndicators reports whether typing indicators are on (the
// default).
func (c *Client) TypingIndicators(ctx context.Context) (bool, error) {
	var off int64
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) (err error) { off, err = tx.Cursor(inbox.TypingOff); return })
	return off == 0, err
}

// SetTypingIndicators turns typing indicators on or off: when off, Ferry
// neither sends them nor reports the contacts'.
func (c *Client) SetTypingIndicators(ctx context.Context, on bool) error {
	var off int64
	if !on {
		off = 1
	}
	return c.a.Store.Update(ctx, func(tx *localstore.Tx) error { return tx.SetCursor(inbox.TypingOff, off) })
}

// Expire deletes the messages whose disappearing timer ran out and
// returns the conversations they were in and when the next one runs out
// (zero if none will). Sync does it too; a program that shows messages
// calls it to keep the screen in step.
func (c *Client) Expire(ctx context.Context) ([]ConversationID, time.Time, error) {
	var convs []int64
	var next time.Time
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) (err error) {
		if convs, err = tx.Expire(c.a.Now()); err != nil {
			return err
		}
		next, err = tx.NextExpiry()
		return err
	})
	out := make([]ConversationID, len(convs))
	for i, id := range convs {
		out[i] = ConversationID(id)
	}
	return out, next, err
}

// Message returns the message with the given id.
func (c *Client) Message(ctx context.Context, id [16]byte) (*Message, error) {
	var out *Message
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		m, err := tx.Message(id)
		if errors.Is(err, localstore.ErrNotFound) || (err == nil && (m.Held || expired(m, c.a.Now()))) {
			return ErrNoMessage
		}
		if err != nil {
			return err
		}
		out, err = c.publicMessage(tx, m)
		return err
	})
	return out, err
}

func expired(m *localstore.Message, now time.Time) bool {
	return !m.Expires.IsZero() && !m.Expires.After(now)
}

// TypingEvent is a contact's typing indicator.
type TypingEvent struct {
	Conversation ConversationID
	Contact      ContactID
	Typing       bool
}

func typingEvents(ts []inbox.Typing) []TypingEvent {
	out := make([]TypingEvent, len(ts))
	for i, t := range ts {
		out[i] = TypingEvent{Conversation: ConversationID(t.Conversation), Contact: ContactID(t.Contact), Typing: t.On}
	}
	return out
}

// FormatTimer says a timer in words: "30 seconds", "5 minutes", "1 hour",
// "1 day", "4 weeks".
func FormatTimer(d time.Duration) string {
	units := []struct {
		d    time.Duration
		name string
	}{{7 * 24 * time.Hour, "week"}, {24 * time.Hour, "day"}, {time.Hour, "hour"}, {time.Minute, "minute"}, {time.Second, "second"}}
	for _, u := range units {
		if d >= u.d && d%u.d == 0 {
			n := int64(d / u.d)
			if n == 1 {
				return "1 " + u.name
			}
			return fmt.Sprintf("%d %ss", n, u.name)
		}
	}
	return d.String()
}

// featureEvents sets the events of the conversation features and of the
// connection status from opts.
func (c *Client) featureEvents(ev *inbox.Events, opts SyncOptions) {
	if opts.OnChanged != nil {
		ev.Changed = func(ids []int64) {
			out := make([]ConversationID, len(ids))
			for i, id := range ids {
				out[i] = ConversationID(id)
			}
			opts.OnChanged(out)
		}
	}
	if opts.OnTyping != nil {
		ev.Typing = func(ts []inbox.Typing) { opts.OnTyping(typingEvents(ts)) }
	}
	if opts.OnStatus != nil {
		ev.Status = func(s inbox.Status) { opts.OnStatus(publicStatus(s)) }
	}
}

// Status is the state of the connection to the user's relay (SyncOptions.
// OnStatus).
type Status struct {
	// Online is set while connected, over Transport to Addr.
	Online          bool
	Transport, Addr string
	// Err, when not online, says in one sentence why the relay could not
	// be reached (errors.As gives a *DialError when a dial failed).
	Err error
	// Retry is when the next attempt starts (zero: Sync is not retrying);
	// Failures counts failed or lost connections in a row; Trying lists
	// the transports the next attempt tries, in order; Ranked is set when
	// that order is the relay's transport ranking, measured by a monitor
	// on this network.
	Retry    time.Time
	Failures int
	Trying   []string
	Ranked   bool
}

func publicStatus(s inbox.Status) Status {
	out := Status{Online: s.Online, Transport: s.Endpoint.Transport, Addr: s.Endpoint.Addr, Err: s.Err, Retry: s.Retry, Failures: s.Failures, Ranked: s.Ranked}
	for _, e := range s.Trying {
		if !slices.Contains(out.Trying, e.Transport) {
			out.Trying = append(out.Trying, e.Transport)
		}
	}
	return out
}

// lastMessages sets the Last message of each conversation.
func (c *Client) lastMessages(tx *localstore.Tx, n *names, convs []Conversation) error {
	for i := range convs {
		ms, err := tx.Messages(localstore.MessageQuery{Conversation: int64(convs[i].ID), Limit: 4, Last: true, Now: c.a.Now()})
		if err != nil {
			return err
		}
		ms = slices.DeleteFunc(ms, isEcho)
		if len(ms) == 0 {
			continue
		}
		last := ms[len(ms)-1]
		if err := n.loadTransfers(tx, []*localstore.Message{last}); err != nil {
			return err
		}
		m := n.message(last)
		if err := n.annotate(tx, []*localstore.Message{last}, []*Message{m}, c.a.Now()); err != nil {
			return err
		}
		convs[i].Last = m
	}
	return nil
}

// safetyPrefix starts the text of a safety code, so that a scanned code
// of something else is told apart.
const safetyPrefix = "ferry-safety:"

// SafetyCode returns the user's side of the safety number with a contact
// as text to show as a QR code; the contact's Ferry scans it and checks it
// with CompareSafetyCode.
func (c *Client) SafetyCode(ctx context.Context, id ContactID) (string, error) {
	f, err := c.fingerprint(ctx, id)
	if err != nil {
		return "", err
	}
	return safetyPrefix + base64.RawURLEncoding.EncodeToString(f.Scannable()), nil
}

// CompareSafetyCode reports whether code, scanned from the contact's
// screen (SafetyCode on their side), matches the safety number here.
func (c *Client) CompareSafetyCode(ctx context.Context, id ContactID, code string) (bool, error) {
	f, err := c.fingerprint(ctx, id)
	if err != nil {
		return false, err
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(code), safetyPrefix)
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if !ok || err != nil {
		return false, errors.New("this is not a Ferry safety code")
	}
	return f.CompareScanned(b)
}

// ChangedElsewhere returns a number that changes whenever another process
// (a ferry command in a terminal, say) changes the profile; changes this
// Client makes or reports through Sync's callbacks do not change it.
func (c *Client) ChangedElsewhere(ctx context.Context) (int64, error) {
	return c.a.Store.DataVersion(ctx)
}
