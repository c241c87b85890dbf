package ferry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-im/ferry/internal/localstore"
)

// ConversationID identifies a conversation in this profile: a 1:1
// conversation with a contact, or (later) a group. It is local: the same
// conversation has other ids on other devices.
type ConversationID int64

// ConversationKind says who takes part in a conversation.
type ConversationKind int

// Conversation kinds.
const (
	// Direct is the user and one contact.
	Direct ConversationKind = iota + 1
	// Group is the user and a group's members.
	Group
)

// Conversation is one conversation.
type Conversation struct {
	ID   ConversationID
	Kind ConversationKind
	// Name is the contact's name for a Direct conversation, the group's
	// name for a Group.
	Name string
	// Contact is the other side of a Direct conversation.
	Contact ContactID
	// Unread counts the incoming messages and notices not yet shown.
	Unread int
	// Timer is the disappearing-message timer (0: off).
	Timer time.Duration
	// Last is the newest message (nil if none), as Messages gives it.
	Last *Message
}

// Conversations returns the user's conversations in the order they began.
func (c *Client) Conversations(ctx context.Context) ([]Conversation, error) {
	var out []Conversation
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		n, err := loadNames(tx)
		if err != nil {
			return err
		}
		unread, err := tx.Unread()
		if err != nil {
			return err
		}
		out = make([]Conversation, 0, len(n.convs))
		for _, conv := range n.convs {
			out = append(out, n.public(conv, unread[conv.ID]))
		}
		return c.lastMessages(tx, n, out)
	})
	return out, err
}

// FindConversation returns the conversation with the given name: a
// contact's (its direct conversation) or a group's.
func (c *Client) FindConversation(ctx context.Context, name string) (Conversation, error) {
	all, err := c.Conversations(ctx)
	if err != nil {
		return Conversation{}, err
	}
	for _, conv := range all {
		if conv.Name == name {
			return conv, nil
		}
	}
	return Conversation{}, fmt.Errorf("%w: %q", ErrUnknownContact, name)
}

// names resolves contact and conversation ids to names within one
// transaction.
type names struct {
	contacts  map[int64]*localstore.Contact
	convs     []*localstore.Conversation
	byID      map[int64]*localstore.Conversation
	transfers map[[16]byte]*localstore.Transfer // of the attachments being converted
}

func loadNames(tx *localstore.Tx) (*names, error) {
	ks, err := tx.AllContacts() // group members who are not contacts name their messages too
	if err != nil {
		return nil, err
	}
	convs, err := tx.Conversations()
	if err != nil {
		return nil, err
	}
	n := &names{contacts: make(map[int64]*localstore.Contact, len(ks)), convs: convs, byID: make(map[int64]*localstore.Conversation, len(convs))}
	for _, k := range ks {
		n.contacts[k.ID] = k
	}
	for _, conv := range convs {
		n.byID[conv.ID] = conv
	}
	return n, nil
}

// name returns a conversation's name.
func (n *names) name(conv *localstore.Conversation) string {
	if conv.Kind == localstore.Direct {
		if k := n.contacts[conv.Contact]; k != nil {
			return k.Name
		}
	}
	return conv.Name
}

func (n *names) public(conv *localstore.Conversation, unread int) Conversation {
	kind := Direct
	if conv.Kind == localstore.Group {
		kind = Group
	}
	return Conversation{ID: ConversationID(conv.ID), Kind: kind, Name: n.name(conv), Contact: ContactID(conv.Contact), Unread: unread,
		Timer: time.Duration(conv.Timer.Seconds) * time.Second}
}

// conversation returns the conversation with the given id.
func conversation(tx *localstore.Tx, id ConversationID) (*localstore.Conversation, error) {
	conv, err := tx.Conversation(int64(id))
	if errors.Is(err, localstore.ErrNotFound) {
		return nil, fmt.Errorf("%w: conversation %d", ErrUnknownContact, id)
	}
	return conv, err
}
