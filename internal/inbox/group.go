package inbox

import (
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-im/ferry/internal/account"
	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/session"
)

// Groups (docs/client.md section 10). A group envelope is opened with the
// key of the group whose hint it carries; its sender must be a member,
// vouch for its sender key with its identity, and sign the message with
// that key. Texts and attachments then go through the usual handlers, in
// the group's conversation, in each member's order; control messages
// change the group when their sender may (admins add, remove, rename and
// name admins; anyone leaves). A welcome (joining) and a re-key (after a
// removal or a departure) come over a pairwise channel instead, from an
// admin.

// Notice codes of groups.
const (
	NoticeGroup byte = 4 // a group changed: joined, members, name, admins
)

// groupBatch is a batch's state of one group: loaded once, saved at the
// end.
type groupBatch struct {
	g     *localstore.GroupState
	conv  *localstore.Conversation // shared by the members' peers
	sg    *session.Group
	keys  []*session.GroupKeys
	peers map[int64]*peer // by contact row
	dirty bool
}

// loadGroups reads the user's groups for the batch.
func (b *batch) loadGroups() error {
	if b.groups != nil {
		return nil
	}
	gs, err := b.tx.Groups()
	if err != nil {
		return err
	}
	b.groups = make([]*groupBatch, 0, len(gs))
	for _, g := range gs {
		if err := b.addGroup(g); err != nil {
			return err
		}
	}
	return nil
}

func (b *batch) addGroup(g *localstore.GroupState) error {
	sg, err := b.in.a.LoadGroupKeys(g)
	if err != nil {
		return err
	}
	gb := &groupBatch{g: g, sg: sg, peers: make(map[int64]*peer)}
	for _, k := range [][32]byte{g.EnvelopeKey, g.PrevKey} {
		if k != ([32]byte{}) {
			gb.keys = append(gb.keys, session.NewGroupKeys(k))
		}
	}
	b.groups = append(b.groups, gb)
	return nil
}

// receiveGroup opens and handles a group envelope; one that opens for no
// group of the user's, or fails a check, is dropped.
func (b *batch) receiveGroup(env []byte) error {
	log := b.in.a.Log
	if err := b.loadGroups(); err != nil {
		return err
	}
	for _, gb := range b.groups {
		for _, k := range gb.keys {
			if gb.g.Gone || !k.Matches(env) {
				continue
			}
			inner, err := k.OpenGroup(env)
			if err != nil {
				log.Warn("dropped a group envelope that does not open", "err", err)
				return nil
			}
			return b.groupMessage(gb, inner)
		}
	}
	log.Debug("dropped a group envelope for no group of ours")
	return nil
}

// groupMessage checks and handles an opened group envelope.
func (b *batch) groupMessage(gb *groupBatch, inner []byte) error {
	log := b.in.a.Log
	gi, err := account.OpenGroupInner(gb.g.ID, inner)
	if err != nil {
		log.Warn("dropped a group message", "err", err)
		return nil
	}
	m := account.FindMember(gb.g, gi.Sender)
	if m == nil {
		log.Warn("dropped a group message from someone not (or no longer) a member")
		return nil
	}
	// The same key again is ignored; an older one is refused, and the
	// message then fails below if it needs it.
	gb.sg.ProcessDistribution(gi.Sender, gi.Distribution)
	pt, err := gb.sg.Decrypt(gi.Sender, gi.Message)
	if err != nil {
		log.Warn("dropped a group message that does not decrypt", "err", err)
		return nil
	}
	gb.dirty = true
	c, err := content.Parse(pt)
	if err != nil {
		log.Warn("dropped a malformed group message", "err", err)
		return nil
	}
	p, err := b.groupPeer(gb, m)
	if err != nil {
		return err
	}
	if p.k.Blocked {
		if o, ok := c.Body.(content.Ordered); ok {
			p.shown = max(p.shown, o.Counter())
		}
		return nil
	}
	switch body := c.Body.(type) {
	case *content.Text:
		return b.handleText(p, c)
	case *content.Attachment:
		return b.handleAttachment(p, c)
	case *content.GroupControl:
		return b.groupControl(gb, m, body)
	case *content.Reply:
		return b.handleReply(p, c)
	case *content.Reaction, *content.Edit, *content.Delete:
		return b.handleAnnotation(p, c)
	case *content.Typing:
		return b.handleTyping(p, c)
	case *content.Timer:
		return b.handleTimer(p, c)
	}
	return b.handleUnknown(p, c)
}

// groupPeer is the batch's state of a member in a group conversation.
func (b *batch) groupPeer(gb *groupBatch, m *localstore.GroupMember) (*peer, error) {
	if p := gb.peers[m.Contact]; p != nil {
		return p, nil
	}
	k, err := b.tx.Contact(m.Contact)
	if err != nil {
		return nil, fmt.Errorf("group member %s: %w", m.Name, err)
	}
	if gb.conv == nil {
		if gb.conv, err = b.tx.Conversation(gb.g.Conversation); err != nil {
			return nil, err
		}
	}
	conv := gb.conv
	p := &peer{k: k, conv: conv, group: true}
	if p.shown, err = b.tx.Counter(conv.ID, k.ID); err != nil {
		return nil, err
	}
	gb.peers[m.Contact] = p
	return p, nil
}

// groupControl applies an in-group control message from member m.
func (b *batch) groupControl(gb *groupBatch, m *localstore.GroupMember, gc *content.GroupControl) error {
	g := gb.g
	if gc.Group != g.ID {
		return nil
	}
	admin := account.IsAdmin(g, m.Identity)
	self := b.in.a.Identity.Public()
	who := b.shownName(m)
	switch {
	case gc.Op == content.GroupAdd && admin:
		return b.groupAdd(gb, m, gc.Members)
	case gc.Op == content.GroupRemove && admin:
		// Membership changes with the re-key the remover sends over the
		// pairwise channels; this only tells everyone, the removed too.
		// The re-key usually comes first (the outbox sends pairwise
		// envelopes before fan-outs), so the removed may be a former
		// member already: it is named from what the re-key kept.
		if slices.Contains(gc.Identities, [32]byte(self)) {
			g.Gone, g.Why = true, fmt.Sprintf("%s removed you from the group", who)
			gb.dirty = true
			return b.noticeIn(g.Conversation, g.Name, NoticeGroup, g.Why+"; you can no longer send to it or read what it says.")
		}
		var names []string
		for _, id := range gc.Identities {
			if name, ok := b.untold(g, id); ok {
				names = append(names, name)
			}
		}
		if len(names) == 0 {
			return nil
		}
		gb.dirty = true
		return b.noticeIn(g.Conversation, g.Name, NoticeGroup, fmt.Sprintf("%s removed %s from the group.", who, joinNames(names)))
	case gc.Op == content.GroupRename && admin:
		g.Name, gb.dirty = gc.Name, true
		return b.noticeIn(g.Conversation, g.Name, NoticeGroup, fmt.Sprintf("%s renamed the group %q.", who, gc.Name))
	case gc.Op == content.GroupAdmins && admin:
		g.Admins, gb.dirty = gc.Admins, true
		return b.noticeIn(g.Conversation, g.Name, NoticeGroup, fmt.Sprintf("%s made the admins: %s.", who, b.memberNames(g, self, gc.Admins)))
	case gc.Op == content.GroupLeave:
		if _, ok := b.untold(g, m.Identity); !ok {
			return nil
		}
		gb.dirty = true
		if err := b.noticeIn(g.Conversation, g.Name, NoticeGroup, fmt.Sprintf("%s left the group.", who)); err != nil {
			return err
		}
		return b.rekeyAfterLeave(gb, m.Identity)
	}
	b.in.a.Log.Info("ignored a group control message its sender may not send", "op", gc.Op)
	return nil
}

// groupAdd adds members an admin announced.
func (b *batch) groupAdd(gb *groupBatch, by *localstore.GroupMember, ms []content.Member) error {
	self := b.in.a.Identity.Public()
	var names []string
	for _, m := range ms {
		if m.Identity == [32]byte(self) || account.FindMember(gb.g, session.PublicIdentity(m.Identity)) != nil {
			continue
		}
		if err := b.addMember(gb, m); err != nil {
			return err
		}
		names = append(names, b.shownName(&gb.g.Members[len(gb.g.Members)-1]))
	}
	if len(names) == 0 {
		return nil
	}
	// The new members learn the group's disappearing timer from each
	// member's next ordered message, which says it again.
	if err := b.retellTimer(gb); err != nil {
		return err
	}
	return b.noticeIn(gb.g.Conversation, gb.g.Name, NoticeGroup, fmt.Sprintf("%s added %s.", b.shownName(by), joinNames(names)))
}

func (b *batch) addMember(gb *groupBatch, m content.Member) error {
	row, err := b.in.a.MemberRow(b.tx, m.Identity, m.Name, m.Relay, m.Mailbox, m.Token)
	if err != nil {
		return err
	}
	account.ForgetFormer(gb.g, m.Identity)
	gb.g.Members = append(gb.g.Members, localstore.GroupMember{Identity: m.Identity, Mailbox: m.Mailbox, Token: m.Token,
		Relay: m.Relay, Name: m.Name, Contact: row})
	if _, err := gb.sg.AddMember(session.PublicIdentity(m.Identity)); err != nil {
		return err
	}
	gb.dirty = true
	return nil
}

// rekeyAfterLeave re-keys the group without the member who left, if the
// user is the admin who does it: the first admin, by identity, who is
// still a member.
func (b *batch) rekeyAfterLeave(gb *groupBatch, left [32]byte) error {
	self := [32]byte(b.in.a.Identity.Public())
	var first [32]byte
	for _, a := range gb.g.Admins {
		if a != left && (a == self || account.FindMember(gb.g, session.PublicIdentity(a)) != nil) && (first == [32]byte{} || string(a[:]) < string(first[:])) {
			first = a
		}
	}
	if first != self || gb.g.Gone {
		return nil
	}
	if err := b.in.a.Rekey(b.tx, gb.g, gb.sg, [][32]byte{left}); err != nil {
		return err
	}
	gb.dirty, b.res.queued = true, true
	return nil
}

// groupDirect handles a welcome or a re-key from sender, which came over
// a pairwise channel (its session, or sealed to the user's identity).
func (b *batch) groupDirect(sender session.PublicIdentity, senderContact *localstore.Contact, gc *content.GroupControl) error {
	if err := b.loadGroups(); err != nil {
		return err
	}
	var gb *groupBatch
	for _, x := range b.groups {
		if x.g.ID == gc.Group {
			gb = x
		}
	}
	switch gc.Op {
	case content.GroupWelcome:
		if senderContact == nil || senderContact.Status != localstore.Confirmed || senderContact.Blocked {
			b.in.a.Log.Info("ignored a group welcome from someone who is not a contact")
			return nil
		}
		return b.welcome(gb, sender, senderContact, gc)
	case content.GroupRekey:
		if gb == nil || !account.IsAdmin(gb.g, [32]byte(sender)) || account.FindMember(gb.g, sender) == nil || gc.Epoch <= gb.g.Epoch {
			b.in.a.Log.Info("ignored a group re-key")
			return nil
		}
		return b.rekeyed(gb, gc)
	}
	return nil
}

// rekeyed applies an admin's re-key: the members gone leave the group
// (the user's own sender key rotates), and the new envelope key seals
// from now on.
func (b *batch) rekeyed(gb *groupBatch, gc *content.GroupControl) error {
	g := gb.g
	self := [32]byte(b.in.a.Identity.Public())
	for _, id := range gc.Identities {
		if id == self {
			g.Gone, g.Why = true, "you were removed from the group"
			continue
		}
		if account.FindMember(g, session.PublicIdentity(id)) == nil {
			continue
		}
		b.noteFormer(g, id, false)
		g.Members = slices.DeleteFunc(g.Members, func(m localstore.GroupMember) bool { return m.Identity == id })
		g.Admins = slices.DeleteFunc(g.Admins, func(a [32]byte) bool { return a == id })
		if _, err := gb.sg.RemoveMember(b.in.a.Rand, session.PublicIdentity(id)); err != nil {
			return err
		}
	}
	g.PrevKey, g.EnvelopeKey, g.Epoch = g.EnvelopeKey, gc.EnvelopeKey, gc.Epoch
	gb.keys = []*session.GroupKeys{session.NewGroupKeys(g.EnvelopeKey), session.NewGroupKeys(g.PrevKey)}
	gb.dirty = true
	return nil
}

// welcome joins the group an admin added the user to (or refreshes it).
func (b *batch) welcome(gb *groupBatch, sender session.PublicIdentity, k *localstore.Contact, gc *content.GroupControl) error {
	self := b.in.a.Identity.Public()
	if !slices.Contains(gc.Admins, [32]byte(sender)) || !slices.ContainsFunc(gc.Members, func(m content.Member) bool { return m.Identity == [32]byte(sender) }) {
		return nil
	}
	var others []session.PublicIdentity
	for _, m := range gc.Members {
		if m.Identity != [32]byte(self) {
			others = append(others, session.PublicIdentity(m.Identity))
		}
	}
	sg, err := session.NewGroup(b.in.a.Rand, session.GroupID(gc.Group), self, others)
	if err != nil {
		return err
	}
	if err := sg.ProcessDistribution(sender, gc.Distribution); err != nil {
		return fmt.Errorf("group welcome: %w", err)
	}
	g := &localstore.GroupState{ID: gc.Group, Name: gc.Name, Epoch: gc.Epoch, EnvelopeKey: gc.EnvelopeKey, Admins: gc.Admins}
	if gb != nil {
		g.Conversation = gb.g.Conversation
		g.Former = gb.g.Former
		b.groups = slices.DeleteFunc(b.groups, func(x *groupBatch) bool { return x == gb })
	} else {
		conv := &localstore.Conversation{Kind: localstore.Group, Name: gc.Name}
		if err := b.tx.PutConversation(conv); err != nil {
			return err
		}
		g.Conversation = conv.ID
	}
	for _, m := range gc.Members {
		if m.Identity == [32]byte(self) {
			continue
		}
		row, err := b.in.a.MemberRow(b.tx, m.Identity, m.Name, m.Relay, m.Mailbox, m.Token)
		if err != nil {
			return err
		}
		g.Members = append(g.Members, localstore.GroupMember{Identity: m.Identity, Mailbox: m.Mailbox, Token: m.Token, Relay: m.Relay, Name: m.Name, Contact: row})
		account.ForgetFormer(g, m.Identity)
	}
	if err := account.SaveGroupKeys(g, sg); err != nil {
		return err
	}
	if err := b.tx.PutGroup(g); err != nil {
		return err
	}
	if err := b.addGroup(g); err != nil {
		return err
	}
	return b.noticeIn(g.Conversation, g.Name, NoticeGroup, fmt.Sprintf("%s added you to the group %q (%d members).", k.Name, gc.Name, len(gc.Members)))
}

// handleGroupControl takes a group control message that came in a
// contact's session: only a welcome or a re-key may.
func (b *batch) handleGroupControl(p *peer, c *content.Content) error {
	gc := c.Body.(*content.GroupControl)
	if p.group || (gc.Op != content.GroupWelcome && gc.Op != content.GroupRekey) {
		return nil
	}
	return b.groupDirect(session.PublicIdentity(p.k.Identity), p.k, gc)
}

// receiveDirect handles a content sealed to the user's identity without
// a session: a welcome or re-key from a group member who is not a
// contact.
func (b *batch) receiveDirect(sender session.PublicIdentity, pt []byte) error {
	c, err := content.Parse(pt)
	if err != nil {
		b.in.a.Log.Warn("dropped a malformed message", "err", err)
		return nil
	}
	gc, ok := c.Body.(*content.GroupControl)
	if !ok || (gc.Op != content.GroupWelcome && gc.Op != content.GroupRekey) {
		b.in.a.Log.Warn("dropped a message sealed without a session that is not a group key")
		return nil
	}
	if err := b.contacts(); err != nil {
		return err
	}
	return b.groupDirect(sender, b.byIdentity[sender.Canonical()], gc)
}

// retellTimer makes the user's next ordered message in the group say
// the group's disappearing timer again (for members who just joined).
func (b *batch) retellTimer(gb *groupBatch) error {
	if gb.conv == nil {
		conv, err := b.tx.Conversation(gb.g.Conversation)
		if err != nil {
			return err
		}
		gb.conv = conv
	}
	if gb.conv.Timer == (localstore.TimerState{}) {
		return nil
	}
	gb.conv.Told = localstore.TimerState{}
	return b.tx.PutConversation(gb.conv)
}

// finishGroups saves the groups the batch changed and their members'
// counters.
func (b *batch) finishGroups() error {
	for _, gb := range b.groups {
		for _, p := range gb.peers {
			if err := b.tx.SetCounter(p.conv.ID, p.k.ID, p.shown); err != nil {
				return err
			}
		}
		if !gb.dirty {
			continue
		}
		if err := account.SaveGroupKeys(gb.g, gb.sg); err != nil {
			return err
		}
		if err := b.tx.PutGroup(gb.g); err != nil {
			return err
		}
		if conv, err := b.tx.Conversation(gb.g.Conversation); err == nil && conv.Name != gb.g.Name {
			if gb.conv != nil {
				conv = gb.conv
			}
			conv.Name = gb.g.Name
			if err := b.tx.PutConversation(conv); err != nil {
				return err
			}
		} else if err != nil && !errors.Is(err, localstore.ErrNotFound) {
			return err
		}
	}
	return nil
}

// shownName is the name the user sees on member m's messages: its
// contact's (which the user may have renamed), else the name the admin's
// card gave.
func (b *batch) shownName(m *localstore.GroupMember) string {
	if k, err := b.tx.Contact(m.Contact); err == nil && k.Name != "" {
		return k.Name
	}
	return m.Name
}

// noteFormer is account.NoteFormer keeping the name the user sees.
func (b *batch) noteFormer(g *localstore.GroupState, id [32]byte, told bool) {
	m := account.FindMember(g, session.PublicIdentity(id))
	account.NoteFormer(g, id, told)
	if f := account.FindFormer(g, session.PublicIdentity(id)); f != nil && m != nil {
		f.Name = b.shownName(m)
	}
}

// untold returns the name of the member (or former member) with
// identity id for a notice that it is gone, and records that one said
// so; ok is false if a notice did already, or id was never a member.
func (b *batch) untold(g *localstore.GroupState, id [32]byte) (name string, ok bool) {
	if f := account.FindFormer(g, session.PublicIdentity(id)); f != nil {
		if f.Told {
			return f.Name, false
		}
		f.Told = true
		return f.Name, true
	}
	if account.FindMember(g, session.PublicIdentity(id)) == nil {
		return "", false
	}
	b.noteFormer(g, id, true)
	return account.FindFormer(g, session.PublicIdentity(id)).Name, true
}

// memberNames names the user ("you"), the members and the former
// members with the given identities, in that order of lookup.
func (b *batch) memberNames(g *localstore.GroupState, self session.PublicIdentity, ids [][32]byte) string {
	var names []string
	for _, id := range ids {
		switch pid := session.PublicIdentity(id); {
		case pid.Equal(self):
			names = append(names, "you")
		case account.FindMember(g, pid) != nil:
			names = append(names, b.shownName(account.FindMember(g, pid)))
		case account.FindFormer(g, pid) != nil:
			names = append(names, account.FindFormer(g, pid).Name)
		default:
			names = append(names, "someone no longer in the group")
		}
	}
	return joinNames(names)
}

func joinNames(names []string) string {
	switch len(names) {
	case 0:
		return "nobody"
	case 1:
		return names[0]
	}
	out := ""
	for i, n := range names {
		switch {
		case i == 0:
			out = n
		case i == len(names)-1:
			out += " and " + n
		default:
			out += ", " + n
		}
	}
	return out
}
