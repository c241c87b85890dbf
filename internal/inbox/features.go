package inbox

import (
	"slices"
	"time"

	"github.com/ferry-im/ferry/internal/account"
	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
)

// The conversation features' handlers (docs/protocol.md section 8):
// replies and timers take a place in the sender's order; reactions, edits
// and deletes are annotations kept by their target; typing is only told.

// TypingOff is the plaintext meta cursor that, when not 0, turns typing
// indicators off: none is sent, and received ones are not told.
const TypingOff = "typing_off"

// typingLate is how old (by the sender's clock) a typing content may be
// and still be told.
const typingLate = 15 * time.Second

// Typing is a contact's typing indicator in a conversation.
type Typing struct {
	Conversation, Contact int64
	On                    bool
}

// features is what a batch's feature contents changed.
type features struct {
	changed []int64 // conversations
	typing  []Typing
}

func (f *features) change(conv int64) {
	if !slices.Contains(f.changed, conv) {
		f.changed = append(f.changed, conv)
	}
}

func (f *features) tell(ev Events) {
	if len(f.changed) > 0 && ev.Changed != nil {
		ev.Changed(f.changed)
	}
	if len(f.typing) > 0 && ev.Typing != nil {
		ev.Typing(f.typing)
	}
}

// timerFor returns the timer that sender had in conv when sending its
// message with counter n: the seconds of its last step at or before n.
func timerFor(conv *localstore.Conversation, sender int64, n uint64) int64 {
	var t int64
	for _, s := range conv.Steps[sender] {
		if s.From <= n {
			t = s.Seconds
		}
	}
	return t
}

// handleReply stores a reply in the sender's order, like a text.
func (b *batch) handleReply(p *peer, c *content.Content) error {
	r := c.Body.(*content.Reply)
	return b.storeOrdered(p, c, r, r.N, localstore.Delivered)
}

func (b *batch) storeOrdered(p *peer, c *content.Content, body content.Body, n uint64, st localstore.State) error {
	enc, err := content.EncodeBody(body)
	if err != nil {
		return err
	}
	return b.ordered(p, &localstore.Message{
		ID: c.ID, Conversation: p.conv.ID, Sender: p.k.ID, Sent: time.UnixMilli(c.Sent), Received: b.now,
		State: st, Kind: int(body.Kind()), Body: enc, N: n,
	})
}

// handleTimer records from which of the sender's messages on its timer
// applies, re-times the ones already stored, and takes the change up if it
// is newer than the conversation's, telling the sender so. A change taken
// up (an echo) is stored read, and not shown.
func (b *batch) handleTimer(p *peer, c *content.Content) error {
	t := c.Body.(*content.Timer)
	if m, err := b.tx.Message(c.ID); err == nil && m != nil {
		return nil // seen before
	}
	steps := append(p.conv.Steps[p.k.ID], localstore.TimerStep{From: t.N + 1, Seconds: int64(t.Seconds)})
	slices.SortFunc(steps, func(x, y localstore.TimerStep) int { return int(x.From) - int(y.From) })
	steps = steps[max(0, len(steps)-localstore.MaxTimerSteps):]
	if p.conv.Steps == nil {
		p.conv.Steps = make(map[int64][]localstore.TimerStep)
	}
	p.conv.Steps[p.k.ID] = steps
	var to uint64
	if i := slices.IndexFunc(steps, func(s localstore.TimerStep) bool { return s.From > t.N+1 }); i >= 0 {
		to = steps[i].From
	}
	if err := b.tx.SetTimers(p.conv.ID, p.k.ID, t.N+1, to, int64(t.Seconds)); err != nil {
		return err
	}
	st := localstore.Delivered
	if t.OriginID != c.ID {
		st = localstore.Read // an echo: not shown
	}
	if err := b.storeOrdered(p, c, t, t.N, st); err != nil {
		return err
	}
	if p.conv.Timer.Newer(t.OriginSent, t.OriginID) && p.group {
		// In a group the user takes the change up and says so before
		// its next ordered message there (sendGroupWith at the root),
		// rather than every member at once.
		p.conv.Timer = localstore.TimerState{Seconds: int64(t.Seconds), OriginSent: t.OriginSent, OriginID: t.OriginID}
	} else if p.conv.Timer.Newer(t.OriginSent, t.OriginID) {
		p.conv.Timer = localstore.TimerState{Seconds: int64(t.Seconds), OriginSent: t.OriginSent, OriginID: t.OriginID}
		echo := func(h account.Header) content.Body {
			return &content.Timer{N: h.N, Seconds: t.Seconds, OriginSent: t.OriginSent, OriginID: t.OriginID}
		}
		m, err := b.in.a.SendOrdered(b.tx, p.k, p.s, p.conv.ID, echo, 0)
		if err != nil {
			return err
		}
		if _, err := b.tx.AdvanceState(m.ID, p.conv.ID, true, localstore.Read); err != nil {
			return err
		}
		b.res.queued = true
	}
	b.res.change(p.conv.ID)
	return b.tx.PutConversation(p.conv)
}

// handleAnnotation keeps a reaction, edit or delete by its target; only
// the newest of a kind per sender and target stays. A delete erases its
// target if it is here and may be deleted.
func (b *batch) handleAnnotation(p *peer, c *content.Content) error {
	var target [16]byte
	switch a := c.Body.(type) {
	case *content.Reaction:
		target = a.Target
	case *content.Edit:
		target = a.Target
	case *content.Delete:
		target = a.Target
	}
	enc, err := content.EncodeBody(c.Body)
	if err != nil {
		return err
	}
	a := &localstore.Annotation{ID: c.ID, Conversation: p.conv.ID, Target: target, Sender: p.k.ID,
		Kind: int(c.Body.Kind()), Sent: time.UnixMilli(c.Sent), Body: enc}
	if err := Annotate(b.tx, a); err != nil {
		return err
	}
	b.res.change(p.conv.ID)
	return nil
}

// Annotate stores an annotation (the user's own or a contact's), keeps
// only the newest of its kind by its sender on its target, and applies a
// delete to a target that is here.
func Annotate(tx *localstore.Tx, a *localstore.Annotation) error {
	fresh, err := tx.PutAnnotation(a)
	if err != nil || !fresh {
		return err
	}
	all, err := tx.Annotations([][16]byte{a.Target})
	if err != nil {
		return err
	}
	newest := a.ID
	for _, o := range all { // oldest first
		if o.Sender == a.Sender && o.Kind == a.Kind {
			newest = o.ID
		}
	}
	if err := tx.DeleteAnnotations(a.Target, a.Sender, a.Kind, newest); err != nil {
		return err
	}
	if a.Kind != int(content.KindDelete) {
		return nil
	}
	m, err := tx.Message(a.Target)
	if err != nil {
		return nil // not here (yet): applied when it comes
	}
	return eraseIfAllowed(tx, m, a)
}

// eraseIfAllowed erases m for the delete a if a's sender wrote m, within
// the edit window.
func eraseIfAllowed(tx *localstore.Tx, m *localstore.Message, a *localstore.Annotation) error {
	if !MayChange(m, a) || m.Kind == localstore.KindDeleted {
		return nil
	}
	return tx.Erase(m.ID)
}

// MayChange reports whether annotation a (an edit or delete) may change
// message m: a's sender wrote m, m is a text or a reply, and a was made
// within content.EditWindow of m.
func MayChange(m *localstore.Message, a *localstore.Annotation) bool {
	if m.Sender != a.Sender || m.Conversation != a.Conversation {
		return false
	}
	if m.Kind != int(content.KindText) && m.Kind != int(content.KindReply) && m.Kind != localstore.KindDeleted {
		return false
	}
	return a.Sent.Sub(m.Sent) <= content.EditWindow
}

// applyPending applies a delete that arrived before the message it
// deletes.
func (b *batch) applyPending(p *peer, m *localstore.Message) error {
	as, err := b.tx.Annotations([][16]byte{m.ID})
	if err != nil {
		return err
	}
	for _, a := range as {
		if a.Kind == int(content.KindDelete) {
			b.res.change(p.conv.ID)
			return eraseIfAllowed(b.tx, m, a)
		}
	}
	return nil
}

// handleTyping tells a contact's typing indicator, unless typing is off
// or it came late.
func (b *batch) handleTyping(p *peer, c *content.Content) error {
	off, err := b.tx.Cursor(TypingOff)
	if err != nil || off != 0 {
		return err
	}
	if b.now.Sub(time.UnixMilli(c.Sent)) > typingLate {
		return nil
	}
	on := c.Body.(*content.Typing).State == content.TypingStarted
	b.res.typing = append(b.res.typing, Typing{Conversation: p.conv.ID, Contact: p.k.ID, On: on})
	return nil
}
