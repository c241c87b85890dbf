package ferry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ferry-im/ferry/internal/invite"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/session"
)

// ContactID identifies a contact in this profile.
type ContactID int64

// ContactStatus is where a contact stands.
type ContactStatus int

// Contact statuses.
const (
	// ContactConfirmed: both sides know each other.
	ContactConfirmed ContactStatus = iota + 1
	// ContactPending: the user accepted the contact's invite; the
	// contact's Ferry has not answered yet (it may be offline). Messages
	// wait at its relay meanwhile.
	ContactPending
	// ContactRefused: the contact's Ferry refused the user's introduction
	// (the invite was used already, altered or expired); nothing sent
	// reaches it. Ask for a new invite.
	ContactRefused
)

var statusNames = map[ContactStatus]string{ContactConfirmed: "confirmed", ContactPending: "pending", ContactRefused: "refused"}

func (s ContactStatus) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// Contact is a peer the user can message.
type Contact struct {
	ID           ContactID
	Name         string
	Identity     session.PublicIdentity
	Relay        string // the contact's relay link
	Conversation ConversationID
	Status       ContactStatus
	// Blocked contacts' messages are dropped unread and nothing is sent
	// to them.
	Blocked bool
	Added   time.Time
}

var contactStatus = map[localstore.ContactStatus]ContactStatus{
	localstore.Confirmed: ContactConfirmed,
	localstore.Pending:   ContactPending,
	localstore.Refused:   ContactRefused,
}

func publicContact(tx *localstore.Tx, k *localstore.Contact) (Contact, error) {
	conv, err := tx.DirectConversation(k.ID)
	if err != nil {
		return Contact{}, err
	}
	return Contact{
		ID: ContactID(k.ID), Name: k.Name, Identity: session.PublicIdentity(k.Identity), Relay: k.RelayLink,
		Conversation: ConversationID(conv.ID), Status: contactStatus[k.Status], Blocked: k.Blocked,
		Added: time.UnixMilli(k.Added),
	}, nil
}

// ErrOwnInvite means Accept was given the user's own invite.
var ErrOwnInvite = invite.ErrOwnInvite

// InviteTTL is how long an invite link stays usable.
const InviteTTL = invite.TTL

// Contacts returns the user's contacts in the order they were added.
func (c *Client) Contacts(ctx context.Context) ([]Contact, error) {
	var out []Contact
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		ks, err := tx.Contacts()
		if err != nil {
			return err
		}
		out = make([]Contact, 0, len(ks))
		for _, k := range ks {
			pk, err := publicContact(tx, k)
			if err != nil {
				return err
			}
			out = append(out, pk)
		}
		return nil
	})
	return out, err
}

// FindContact returns the contact with the given name.
func (c *Client) FindContact(ctx context.Context, name string) (Contact, error) {
	var out Contact
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		k, err := findContact(tx, name)
		if err != nil {
			return err
		}
		out, err = publicContact(tx, k)
		return err
	})
	return out, err
}

func findContact(tx *localstore.Tx, name string) (*localstore.Contact, error) {
	ks, err := tx.Contacts()
	if err != nil {
		return nil, err
	}
	for _, k := range ks {
		if k.Name == name {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownContact, name)
}

func contactByID(tx *localstore.Tx, id ContactID) (*localstore.Contact, error) {
	k, err := tx.Contact(int64(id))
	if errors.Is(err, localstore.ErrNotFound) {
		return nil, fmt.Errorf("%w: id %d", ErrUnknownContact, id)
	}
	return k, err
}

// Invite registers a new one-time invite secret and returns the invite
// link to give to one new contact. The link carries the user's relay,
// identity key, mailbox, a delivery token made for this invite alone
// (registered with the relay now, or by the next connection if it cannot
// be reached), name and the secret. It works
// for InviteTTL, once; a second use is refused, and the user is told.
func (c *Client) Invite(ctx context.Context) (string, error) {
	inv, err := invite.Make(ctx, c.a)
	if err != nil {
		return "", err
	}
	// The relay must know the invite's token before the invitee asks.
	if err := c.in.Prekeys().Register(ctx, c.a); err != nil {
		c.a.Log.Info("the invite's token waits for the next connection to the relay", "err", err)
	}
	return inv, nil
}

// Accept accepts an invite link: it fetches the inviter's prekey bundle
// from the inviter's relay, sets up a session (PQXDH), stores the inviter
// as a ContactPending contact (named as the inviter chose, made unique)
// and sends the inviter an introduction. The contact becomes
// ContactConfirmed when the inviter's Ferry answers (Sync reports it with
// OnContact), or ContactRefused if it refuses the invite.
//
// If the inviter's relay cannot be reached, nothing is stored and the
// error wraps ErrUnreachable. If the introduction cannot be delivered, the
// contact is kept, the introduction stays queued and the error is
// ErrQueued.
func (c *Client) Accept(ctx context.Context, inviteLink string) (Contact, error) {
	n, err := invite.Accept(ctx, c.a, inviteLink)
	if err != nil {
		return Contact{}, err
	}
	k := Contact{
		ID: ContactID(n.Contact.ID), Name: n.Contact.Name, Identity: session.PublicIdentity(n.Contact.Identity),
		Relay: n.Contact.RelayLink, Conversation: ConversationID(n.Conversation.ID), Status: ContactPending,
		Added: time.UnixMilli(n.Contact.Added),
	}
	res, err := c.ob.Flush(ctx)
	if err != nil {
		return k, err
	}
	if !res.Sent[n.Contact.Introduction] {
		return k, queued(res.Unreachable)
	}
	return k, nil
}

// RenameContact gives a contact another name, which no other contact may
// have.
func (c *Client) RenameContact(ctx context.Context, id ContactID, name string) error {
	if err := link.CheckName(name); err != nil {
		return err
	}
	return c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		k, err := contactByID(tx, id)
		if err != nil {
			return err
		}
		if other, err := findContact(tx, name); err == nil && other.ID != k.ID {
			return fmt.Errorf("you already have a contact named %q", name)
		}
		k.Name = name
		return tx.PutContact(k)
	})
}

// RemoveContact deletes a contact with its conversation, history, session
// and what waits in the outbox for it, and revokes the delivery tokens it
// held (at once if the relay can be reached, else at the next
// connection). A later invite from the same person makes a new contact.
func (c *Client) RemoveContact(ctx context.Context, id ContactID) error {
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		k, err := contactByID(tx, id)
		if err != nil {
			return err
		}
		if err := revokeTokens(tx, k); err != nil {
			return err
		}
		if conv, err := tx.DirectConversation(k.ID); err == nil {
			if err := tx.DeleteConversation(conv.ID); err != nil {
				return err
			}
		}
		if err := tx.DropOutbox(k.ID); err != nil {
			return err
		}
		return tx.DeleteContact(k.ID)
	})
	if err != nil {
		return err
	}
	c.syncTokens(ctx)
	return nil
}

// syncTokens tells the relay, best effort, which delivery tokens the
// user revoked or restored; what fails now is done by the next
// connection.
func (c *Client) syncTokens(ctx context.Context) {
	if err := c.in.Prekeys().Register(ctx, c.a); err != nil {
		c.a.Log.Info("delivery tokens wait for the next connection to the relay", "err", err)
	}
}

// revokeTokens revokes the delivery tokens k holds (its own and, if it
// came by an invite not yet rotated, the invite's) for good.
func revokeTokens(tx *localstore.Tx, k *localstore.Contact) error {
	return changeTokens(tx, k, func(t *localstore.OwnToken) { t.Revoked = true })
}

// blockTokens keeps k's delivery tokens off the relay while k is blocked,
// or lets them back when it is unblocked.
func blockTokens(tx *localstore.Tx, k *localstore.Contact, blocked bool) error {
	return changeTokens(tx, k, func(t *localstore.OwnToken) { t.Blocked = blocked })
}

func changeTokens(tx *localstore.Tx, k *localstore.Contact, change func(*localstore.OwnToken)) error {
	prof, err := tx.Profile()
	if err != nil {
		return err
	}
	for i := range prof.Tokens {
		if prof.Tokens[i].Contact == k.ID {
			change(&prof.Tokens[i])
		}
	}
	return tx.PutProfile(prof)
}

// BlockContact blocks a contact (its messages are dropped unread, nothing
// is sent to it, and what waits in the outbox for it is dropped) or
// unblocks it.
func (c *Client) BlockContact(ctx context.Context, id ContactID, blocked bool) error {
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		k, err := contactByID(tx, id)
		if err != nil {
			return err
		}
		if k.Blocked != blocked {
			if err := blockTokens(tx, k, blocked); err != nil {
				return err
			}
		}
		k.Blocked = blocked
		if blocked {
			if err := tx.DropOutbox(k.ID); err != nil {
				return err
			}
		}
		return tx.PutContact(k)
	})
	if err != nil {
		return err
	}
	c.syncTokens(ctx)
	return nil
}

// SafetyNumber returns the 60-digit safety number of the user and a
// contact, in twelve groups of five: the same on both sides, so two
// people can compare them (in person or over another channel) to rule out
// a relay or invite link that swapped keys. Each side's stable identifier
// is its own identity key.
func (c *Client) SafetyNumber(ctx context.Context, id ContactID) (string, error) {
	f, err := c.fingerprint(ctx, id)
	if err != nil {
		return "", err
	}
	d := f.Displayable()
	var groups []string
	for i := 0; i+5 <= len(d); i += 5 {
		groups = append(groups, d[i:i+5])
	}
	return strings.Join(groups, " "), nil
}

// fingerprint returns the safety number of the user and a contact.
func (c *Client) fingerprint(ctx context.Context, id ContactID) (*session.Fingerprint, error) {
	var remote session.PublicIdentity
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		k, err := contactByID(tx, id)
		if err == nil {
			remote = session.PublicIdentity(k.Identity)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	local := c.a.Identity.Public()
	return session.SafetyNumber(local, remote, local[:], remote[:])
}
