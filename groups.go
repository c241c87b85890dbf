package ferry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/ferry-im/ferry/internal/account"
	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/session"
)

// MaxGroupMembers is the most members a group has, the user included.
const MaxGroupMembers = content.MaxGroupMembers

// ErrNotAdmin means only a group's admins may do that.
var ErrNotAdmin = errors.New("only the group's admins may do that")

// GroupInfo describes a group.
type GroupInfo struct {
	Conversation ConversationID
	Name         string
	// Members are the other members' names; Admins the admins' (the
	// user's own as "me").
	Members []string
	Admins  []string
	// Admin is set if the user is an admin.
	Admin bool
	// Gone says why the user is no longer in the group ("" while it is).
	Gone string
}

// Groups returns the user's groups.
func (c *Client) Groups(ctx context.Context) ([]GroupInfo, error) {
	var out []GroupInfo
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		gs, err := tx.Groups()
		for _, g := range gs {
			out = append(out, c.groupInfo(g))
		}
		return err
	})
	return out, err
}

func (c *Client) groupInfo(g *localstore.GroupState) GroupInfo {
	self := [32]byte(c.a.Identity.Public())
	gi := GroupInfo{Conversation: ConversationID(g.Conversation), Name: g.Name, Admin: slices.Contains(g.Admins, self)}
	if g.Gone {
		gi.Gone = g.Why
	}
	for _, m := range g.Members {
		gi.Members = append(gi.Members, m.Name)
	}
	for _, a := range g.Admins {
		if a == self {
			gi.Admins = append(gi.Admins, "me")
		} else if m := account.FindMember(g, session.PublicIdentity(a)); m != nil {
			gi.Admins = append(gi.Admins, m.Name)
		}
	}
	return gi
}

// CreateGroup makes a group called name with the given contacts, the user
// its admin, and sends each of them a welcome over their session. It
// returns the group's conversation; delivery goes on as for Send (the
// welcomes stay queued if a relay cannot be reached, and ErrQueued says
// so).
func (c *Client) CreateGroup(ctx context.Context, name string, members []ContactID) (Conversation, error) {
	if !content.ValidGroupName(name) {
		return Conversation{}, fmt.Errorf("a group name is 1 to %d bytes without control characters", content.MaxGroupName)
	}
	if len(members)+1 > MaxGroupMembers {
		return Conversation{}, fmt.Errorf("a group has at most %d members", MaxGroupMembers)
	}
	var conv Conversation
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		if _, err := findConversationByName(tx, name); err == nil {
			return fmt.Errorf("a contact or group is called %q already; choose another name", name)
		}
		g, sg, err := c.newGroup(tx, name, members)
		if err != nil {
			return err
		}
		for i := range g.Members {
			if err := c.welcome(tx, g, sg, &g.Members[i]); err != nil {
				return err
			}
		}
		if err := c.saveGroup(tx, g, sg); err != nil {
			return err
		}
		conv = Conversation{ID: ConversationID(g.Conversation), Kind: Group, Name: name}
		return groupNotice(tx, c.a, g.Conversation, fmt.Sprintf("you created the group %q with %s.", name, joinNames(memberNames(g))))
	})
	if err != nil {
		return Conversation{}, err
	}
	return conv, c.flushAll(ctx)
}

// newGroup makes a group's conversation and state with the user as its
// only admin.
func (c *Client) newGroup(tx *localstore.Tx, name string, members []ContactID) (*localstore.GroupState, *session.Group, error) {
	g := &localstore.GroupState{Name: name, Epoch: 1, Admins: [][32]byte{[32]byte(c.a.Identity.Public())}}
	if _, err := io.ReadFull(c.a.Rand, g.ID[:]); err != nil {
		return nil, nil, err
	}
	if _, err := io.ReadFull(c.a.Rand, g.EnvelopeKey[:]); err != nil {
		return nil, nil, err
	}
	var ids []session.PublicIdentity
	for _, id := range members {
		k, err := c.memberContact(tx, id)
		if err != nil {
			return nil, nil, err
		}
		if account.FindMember(g, session.PublicIdentity(k.Identity)) != nil {
			continue
		}
		g.Members = append(g.Members, memberOf(k))
		ids = append(ids, session.PublicIdentity(k.Identity))
	}
	sg, err := session.NewGroup(c.a.Rand, session.GroupID(g.ID), c.a.Identity.Public(), ids)
	if err != nil {
		return nil, nil, err
	}
	conv := &localstore.Conversation{Kind: localstore.Group, Name: name}
	if err := tx.PutConversation(conv); err != nil {
		return nil, nil, err
	}
	g.Conversation = conv.ID
	return g, sg, nil
}

// memberContact is a contact that may join a group.
func (c *Client) memberContact(tx *localstore.Tx, id ContactID) (*localstore.Contact, error) {
	k, err := contactByID(tx, id)
	if err != nil {
		return nil, err
	}
	if k.Status != localstore.Confirmed || k.Blocked {
		return nil, fmt.Errorf("%s cannot join a group until they are a confirmed contact you have not blocked", k.Name)
	}
	return k, nil
}

func memberOf(k *localstore.Contact) localstore.GroupMember {
	return localstore.GroupMember{Identity: [32]byte(k.Identity), Mailbox: [16]byte(k.Mailbox), Token: [32]byte(k.Token),
		Relay: k.RelayLink, Name: k.Name, Contact: k.ID}
}

// welcome sends member m the whole group, with the user's sender key.
func (c *Client) welcome(tx *localstore.Tx, g *localstore.GroupState, sg *session.Group, m *localstore.GroupMember) error {
	gc := &content.GroupControl{Op: content.GroupWelcome, Group: g.ID, Epoch: g.Epoch, EnvelopeKey: g.EnvelopeKey, Name: g.Name,
		Distribution: sg.Distribution(), Admins: g.Admins, Members: c.cards(g)}
	return c.sealDirect(tx, m, gc)
}

// cards describes every member, the user too, as admins tell them.
func (c *Client) cards(g *localstore.GroupState) []content.Member {
	out := []content.Member{{Identity: [32]byte(c.a.Identity.Public()), Mailbox: c.a.Mailbox, Token: c.a.Token,
		Relay: c.a.Relay.String(), Name: c.a.Name}}
	for _, m := range g.Members {
		out = append(out, content.Member{Identity: m.Identity, Mailbox: m.Mailbox, Token: m.Token, Relay: m.Relay, Name: m.Name})
	}
	return out
}

// sealDirect sends a group control message to one member pairwise.
func (c *Client) sealDirect(tx *localstore.Tx, m *localstore.GroupMember, gc *content.GroupControl) error {
	id, err := c.a.NewID()
	if err != nil {
		return err
	}
	k, s, err := c.a.SealDirect(tx, m, &content.Content{ID: id, Sent: c.a.Now().UnixMilli(), Body: gc})
	if err != nil || k == nil {
		return err
	}
	return saveContactSession(tx, k, s)
}

func (c *Client) saveGroup(tx *localstore.Tx, g *localstore.GroupState, sg *session.Group) error {
	if err := account.SaveGroupKeys(g, sg); err != nil {
		return err
	}
	return tx.PutGroup(g)
}

// group loads the group of conversation id, with its sender keys, for
// the user to act in: it must still be a member, and an admin if admin
// is set.
func (c *Client) group(tx *localstore.Tx, id ConversationID, admin bool) (*localstore.GroupState, *session.Group, error) {
	g, err := tx.Group(int64(id))
	if errors.Is(err, localstore.ErrNotFound) {
		return nil, nil, fmt.Errorf("%w: no group with that conversation", ErrUnknownContact)
	}
	if err != nil {
		return nil, nil, err
	}
	if g.Gone {
		return nil, nil, fmt.Errorf("%s, so you can no longer send to %s", g.Why, g.Name)
	}
	if admin && !account.IsAdmin(g, [32]byte(c.a.Identity.Public())) {
		return nil, nil, fmt.Errorf("%w: ask an admin of %s", ErrNotAdmin, g.Name)
	}
	sg, err := c.a.LoadGroupKeys(g)
	return g, sg, err
}

// sendGroup seals body in the group for every member and stores it as
// the user's message; an ordered body gets the user's next counter. An
// unordered body is not stored: the message returned gives its id.
func (c *Client) sendGroup(tx *localstore.Tx, g *localstore.GroupState, sg *session.Group, body content.Body) (*localstore.Message, error) {
	return c.sendGroupWith(tx, g, sg, func(h account.Header) content.Body {
		switch b := body.(type) {
		case *content.Text:
			b.N = h.N
		case *content.Attachment:
			b.N = h.N
		case *content.Reply:
			b.N = h.N
		}
		return body
	})
}

// sendGroupWith is sendGroup for a body made for the header chosen: the
// user's next counter in the group (taken only if the body is ordered),
// the content id and the time. An ordered message gets the group's
// disappearing timer; if the user has not yet told the group that it
// took up the timer's latest change, a timer saying so goes first
// (docs/protocol.md section 8.1, in groups).
func (c *Client) sendGroupWith(tx *localstore.Tx, g *localstore.GroupState, sg *session.Group, body func(h account.Header) content.Body) (*localstore.Message, error) {
	lc, err := tx.Conversation(g.Conversation)
	if err != nil {
		return nil, err
	}
	h, err := c.groupHeader(tx, g)
	if err != nil {
		return nil, err
	}
	b := body(h)
	_, ordered := b.(content.Ordered)
	if t, isTimer := b.(*content.Timer); isTimer {
		lc.Told = localstore.TimerState{Seconds: int64(t.Seconds), OriginSent: t.OriginSent, OriginID: t.OriginID}
		if err := tx.PutConversation(lc); err != nil {
			return nil, err
		}
	} else if ordered && lc.Told != lc.Timer {
		t := lc.Timer
		echo := &content.Timer{N: h.N, Seconds: uint32(t.Seconds), OriginSent: t.OriginSent, OriginID: t.OriginID}
		m, err := c.sendGroupBody(tx, g, sg, h, echo, 0)
		if err != nil {
			return nil, err
		}
		if _, err := tx.AdvanceState(m.ID, g.Conversation, true, localstore.Read); err != nil {
			return nil, err
		}
		lc.Told = t
		if err := tx.PutConversation(lc); err != nil {
			return nil, err
		}
		if h, err = c.groupHeader(tx, g); err != nil {
			return nil, err
		}
		b = body(h)
	}
	var timer int64
	if ordered && b.Kind() != content.KindTimer {
		timer = lc.Timer.Seconds
	}
	return c.sendGroupBody(tx, g, sg, h, b, timer)
}

// groupHeader chooses the header of the user's next content in group g.
func (c *Client) groupHeader(tx *localstore.Tx, g *localstore.GroupState) (account.Header, error) {
	id, err := c.a.NewID()
	if err != nil {
		return account.Header{}, err
	}
	n, err := nextCounter(tx, g.Conversation)
	return account.Header{N: n, ID: id, Sent: time.UnixMilli(c.a.Now().UnixMilli())}, err
}

// sendGroupBody seals body under h for the group and keeps it, if
// ordered, with the disappearing timer given.
func (c *Client) sendGroupBody(tx *localstore.Tx, g *localstore.GroupState, sg *session.Group, h account.Header, body content.Body, timer int64) (*localstore.Message, error) {
	m := &localstore.Message{ID: h.ID, Conversation: g.Conversation, Sender: localstore.SenderSelf, Sent: h.Sent,
		State: localstore.Queued, Kind: int(body.Kind())}
	if err := c.a.SealGroup(tx, g, sg, &content.Content{ID: h.ID, Sent: h.Sent.UnixMilli(), Body: body}); err != nil {
		return nil, err
	}
	if _, ok := body.(content.Ordered); !ok {
		return m, nil // not kept: control messages, reactions, edits, deletes, typing
	}
	m.N, m.Timer = h.N, timer
	if timer > 0 {
		m.Expires = h.Sent.Add(time.Duration(timer) * time.Second)
	}
	if len(g.Members) == 0 {
		m.State = localstore.Sent
	}
	var err error
	if m.Body, err = content.EncodeBody(body); err != nil {
		return nil, err
	}
	if _, err := tx.InsertMessage(m); err != nil {
		return nil, err
	}
	return m, tx.SetCounter(g.Conversation, localstore.SenderSelf, m.N)
}

func nextCounter(tx *localstore.Tx, conv int64) (uint64, error) {
	n, err := tx.Counter(conv, localstore.SenderSelf)
	return n + 1, err
}

// AddToGroup adds a contact to a group the user administers: the contact
// gets a welcome with the whole group, and the members learn of it.
func (c *Client) AddToGroup(ctx context.Context, conv ConversationID, contact ContactID) error {
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		g, sg, err := c.group(tx, conv, true)
		if err != nil {
			return err
		}
		k, err := c.memberContact(tx, contact)
		if err != nil {
			return err
		}
		if account.FindMember(g, session.PublicIdentity(k.Identity)) != nil {
			return fmt.Errorf("%s is in %s already", k.Name, g.Name)
		}
		if len(g.Members)+2 > MaxGroupMembers {
			return fmt.Errorf("%s has %d members, the most a group has", g.Name, MaxGroupMembers)
		}
		m := memberOf(k)
		card := content.Member{Identity: m.Identity, Mailbox: m.Mailbox, Token: m.Token, Relay: m.Relay, Name: m.Name}
		if _, err := c.sendGroup(tx, g, sg, &content.GroupControl{Op: content.GroupAdd, Group: g.ID, Members: []content.Member{card}}); err != nil {
			return err
		}
		if _, err := sg.AddMember(session.PublicIdentity(k.Identity)); err != nil {
			return err
		}
		g.Members = append(g.Members, m)
		account.ForgetFormer(g, m.Identity)
		if err := c.welcome(tx, g, sg, &g.Members[len(g.Members)-1]); err != nil {
			return err
		}
		if err := c.saveGroup(tx, g, sg); err != nil {
			return err
		}
		// The new member learns the disappearing timer from each
		// member's next ordered message (sendGroupWith), the user's too.
		lc, err := tx.Conversation(g.Conversation)
		if err != nil {
			return err
		}
		if lc.Told != (localstore.TimerState{}) {
			lc.Told = localstore.TimerState{}
			if err := tx.PutConversation(lc); err != nil {
				return err
			}
		}
		return groupNotice(tx, c.a, g.Conversation, fmt.Sprintf("you added %s.", k.Name))
	})
	if err != nil {
		return err
	}
	return c.flushAll(ctx)
}

// RemoveFromGroup removes the member called name from a group the user
// administers: everyone is told, and the group gets a new key that only
// the remaining members receive, so the removed member can read nothing
// sent after their clients have it (docs/client.md section 10).
func (c *Client) RemoveFromGroup(ctx context.Context, conv ConversationID, name string) error {
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		g, sg, err := c.group(tx, conv, true)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(g.Members, func(m localstore.GroupMember) bool { return m.Name == name })
		if i < 0 {
			return fmt.Errorf("%s has no member called %q (ferry group list shows them)", g.Name, name)
		}
		gone := g.Members[i].Identity
		if _, err := c.sendGroup(tx, g, sg, &content.GroupControl{Op: content.GroupRemove, Group: g.ID, Identities: [][32]byte{gone}}); err != nil {
			return err
		}
		if err := c.a.Rekey(tx, g, sg, [][32]byte{gone}); err != nil {
			return err
		}
		if err := c.saveGroup(tx, g, sg); err != nil {
			return err
		}
		return groupNotice(tx, c.a, g.Conversation, fmt.Sprintf("you removed %s.", name))
	})
	if err != nil {
		return err
	}
	return c.flushAll(ctx)
}

// LeaveGroup tells the members the user leaves, and forgets the group's
// keys (an admin re-keys it without the user).
func (c *Client) LeaveGroup(ctx context.Context, conv ConversationID) error {
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		g, sg, err := c.group(tx, conv, false)
		if err != nil {
			return err
		}
		if _, err := c.sendGroup(tx, g, sg, &content.GroupControl{Op: content.GroupLeave, Group: g.ID}); err != nil {
			return err
		}
		g.Gone, g.Why = true, "you left the group"
		g.EnvelopeKey, g.PrevKey = [32]byte{}, [32]byte{}
		if err := c.saveGroup(tx, g, sg); err != nil {
			return err
		}
		return groupNotice(tx, c.a, g.Conversation, "you left the group.")
	})
	if err != nil {
		return err
	}
	return c.flushAll(ctx)
}

// RenameGroup renames a group the user administers, for every member.
func (c *Client) RenameGroup(ctx context.Context, conv ConversationID, name string) error {
	if !content.ValidGroupName(name) {
		return fmt.Errorf("a group name is 1 to %d bytes without control characters", content.MaxGroupName)
	}
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		g, sg, err := c.group(tx, conv, true)
		if err != nil {
			return err
		}
		if _, err := c.sendGroup(tx, g, sg, &content.GroupControl{Op: content.GroupRename, Group: g.ID, Name: name}); err != nil {
			return err
		}
		g.Name = name
		lc, err := tx.Conversation(g.Conversation)
		if err != nil {
			return err
		}
		lc.Name = name
		if err := tx.PutConversation(lc); err != nil {
			return err
		}
		if err := c.saveGroup(tx, g, sg); err != nil {
			return err
		}
		return groupNotice(tx, c.a, g.Conversation, fmt.Sprintf("you renamed the group %q.", name))
	})
	if err != nil {
		return err
	}
	return c.flushAll(ctx)
}

// flushAll delivers the outbox, saying ErrQueued if something stayed.
func (c *Client) flushAll(ctx context.Context) error {
	res, err := c.ob.Flush(ctx)
	if err != nil {
		return err
	}
	if res.Unreachable != nil {
		return queued(res.Unreachable)
	}
	return nil
}

func groupNotice(tx *localstore.Tx, a *account.Account, conv int64, text string) error {
	id, err := a.NewID()
	if err != nil {
		return err
	}
	now := a.Now()
	_, err = tx.InsertMessage(&localstore.Message{ID: id, Conversation: conv, Sender: localstore.SenderFerry, Sent: now, Received: now,
		State: localstore.Read, Kind: localstore.KindNotice, Body: append([]byte{4}, text...)})
	return err
}

func memberNames(g *localstore.GroupState) []string {
	var out []string
	for _, m := range g.Members {
		out = append(out, m.Name)
	}
	return out
}

func joinNames(names []string) string {
	switch len(names) {
	case 0:
		return "nobody else"
	case 1:
		return names[0]
	}
	return fmt.Sprintf("%s and %s", joinComma(names[:len(names)-1]), names[len(names)-1])
}

func joinComma(names []string) string {
	out := names[0]
	for _, n := range names[1:] {
		out += ", " + n
	}
	return out
}

// findConversationByName finds a conversation by name in tx.
func findConversationByName(tx *localstore.Tx, name string) (*localstore.Conversation, error) {
	n, err := loadNames(tx)
	if err != nil {
		return nil, err
	}
	for _, conv := range n.convs {
		if n.name(conv) == name {
			return conv, nil
		}
	}
	return nil, ErrUnknownContact
}

// SetGroupAdmins makes the members called names (and the user, "me" or
// not named, only if included as "me") the admins of a group the user
// administers.
func (c *Client) SetGroupAdmins(ctx context.Context, conv ConversationID, names []string) error {
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		g, sg, err := c.group(tx, conv, true)
		if err != nil {
			return err
		}
		var admins [][32]byte
		for _, n := range names {
			if n == "me" {
				admins = append(admins, [32]byte(c.a.Identity.Public()))
				continue
			}
			i := slices.IndexFunc(g.Members, func(m localstore.GroupMember) bool { return m.Name == n })
			if i < 0 {
				return fmt.Errorf("%s has no member called %q (ferry group list shows them)", g.Name, n)
			}
			if !slices.Contains(admins, g.Members[i].Identity) {
				admins = append(admins, g.Members[i].Identity)
			}
		}
		if len(admins) == 0 {
			return fmt.Errorf("a group needs at least one admin")
		}
		if _, err := c.sendGroup(tx, g, sg, &content.GroupControl{Op: content.GroupAdmins, Group: g.ID, Admins: admins}); err != nil {
			return err
		}
		g.Admins = admins
		if err := c.saveGroup(tx, g, sg); err != nil {
			return err
		}
		var who []string
		for _, a := range admins {
			if m := account.FindMember(g, session.PublicIdentity(a)); m != nil {
				who = append(who, m.Name)
			} else {
				who = append(who, "you")
			}
		}
		return groupNotice(tx, c.a, g.Conversation, fmt.Sprintf("you made the admins: %s.", joinNames(who)))
	})
	if err != nil {
		return err
	}
	return c.flushAll(ctx)
}
