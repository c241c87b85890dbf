package ferry

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/session"
	"github.com/ferry-im/ferry/wire"
)

// Contact is a peer the user can message.
type Contact struct {
	Name     string
	Identity session.PublicIdentity
	Relay    string // the contact's relay link
}

// ErrOwnInvite means Accept was given the user's own invite.
var ErrOwnInvite = errors.New("this is your own invite")

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

// checkNotContact fails if identity belongs to a contact already.
func checkNotContact(tx *localstore.Tx, identity session.PublicIdentity) error {
	ks, err := tx.Contacts()
	if err != nil {
		return err
	}
	for _, k := range ks {
		if session.PublicIdentity(k.Identity).Equal(identity) {
			return fmt.Errorf("%s is already your contact", k.Name)
		}
	}
	return nil
}

// uniqueName returns want, or want-2, want-3... if a contact has it.
func uniqueName(ks []*localstore.Contact, want string) string {
	taken := make(map[string]bool, len(ks))
	for _, k := range ks {
		taken[k.Name] = true
	}
	if !taken[want] {
		return want
	}
	for i := 2; ; i++ {
		n := want + "-" + strconv.Itoa(i)
		if !taken[n] {
			return n
		}
	}
}

// Contacts returns the user's contacts in the order they were added.
func (c *Client) Contacts(ctx context.Context) ([]Contact, error) {
	var out []Contact
	err := c.store.Update(ctx, func(tx *localstore.Tx) error {
		ks, err := tx.Contacts()
		out = out[:0]
		for _, k := range ks {
			out = append(out, Contact{Name: k.Name, Identity: session.PublicIdentity(k.Identity), Relay: k.RelayLink})
		}
		return err
	})
	return out, err
}

// Invite registers a new one-time invite secret and returns the invite
// link to give to one new contact. The link carries the user's relay,
// identity key, mailbox, delivery token, name and the secret.
//
// The link works for InviteTTL after Invite returns, once.
func (c *Client) Invite(ctx context.Context) (string, error) {
	var secret [16]byte
	if _, err := io.ReadFull(c.rand, secret[4:]); err != nil {
		return "", err
	}
	binary.BigEndian.PutUint32(secret[:4], uint32(c.now().Unix()))
	if err := c.store.Update(ctx, func(tx *localstore.Tx) error { return tx.AddInvite(secret[:], c.now()) }); err != nil {
		return "", err
	}
	inv := link.Invite{Relay: c.relay, Identity: c.identity.Public(), Mailbox: c.mailbox, Token: c.token, Secret: secret, Name: c.name}
	return inv.String(), nil
}

// InviteTTL is how long an invite link stays usable.
const InviteTTL = 7 * 24 * time.Hour

// An invite secret is issued(4) || random(12): issued is the Unix time in
// seconds, big-endian, at which Invite made it. Only the inviter makes
// and reads secrets (the invitee copies it into its introduction), and an
// introduction counts only if its secret is outstanding, so the time read
// back is the one Invite wrote.

// inviteIssued returns the time at which the invite secret was made.
func inviteIssued(secret [16]byte) time.Time {
	return time.Unix(int64(binary.BigEndian.Uint32(secret[:4])), 0)
}

// usedInvite returns the marker stored, in the invites table, for an invite
// secret used by the contact with this id: it lets a later introduction with
// the same secret name the contact that came first.
func usedInvite(secret [16]byte, contact int64) []byte {
	h := sha256.New()
	h.Write([]byte("ferry used invite\x00"))
	h.Write(secret[:])
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(contact)))
	return h.Sum(nil)[:16]
}

// Accept accepts an invite link: it fetches the inviter's prekey bundle
// from the inviter's relay, sets up a session (PQXDH), stores the inviter
// as a contact and sends the inviter an introduction (the user's name,
// relay, mailbox and delivery token, and the invite's secret). It returns
// the contact's name (the inviter's chosen name, made unique among the
// user's contacts). The inviter learns of the user the next time it syncs.
//
// If the inviter's relay cannot be reached, nothing is stored and the error
// wraps ErrUnreachable. If the introduction cannot be delivered, the contact
// is kept, the introduction stays queued and the error is ErrQueued.
func (c *Client) Accept(ctx context.Context, invite string) (string, error) {
	inv, err := link.ParseInvite(invite)
	if err != nil {
		return "", err
	}
	if session.PublicIdentity(inv.Identity).Equal(c.identity.Public()) {
		return "", ErrOwnInvite
	}
	// Check before fetching: a fetch uses up one of the inviter's
	// one-time prekeys.
	if err := c.store.Update(ctx, func(tx *localstore.Tx) error { return checkNotContact(tx, inv.Identity) }); err != nil {
		return "", err
	}
	bundle, err := c.fetchBundle(ctx, inv)
	if err != nil {
		return "", err
	}
	s, err := session.Initiate(c.rand, c.identity, bundle)
	if err != nil {
		return "", fmt.Errorf("start session: %w", err)
	}
	s.Rand = c.rand
	var name string
	var introID [16]byte
	err = c.store.Update(ctx, func(tx *localstore.Tx) error {
		ks, err := tx.Contacts()
		if err != nil {
			return err
		}
		if err := checkNotContact(tx, inv.Identity); err != nil {
			return err
		}
		name = uniqueName(ks, inv.Name)
		k := &localstore.Contact{
			Name: name, Identity: inv.Identity[:], RelayLink: inv.Relay.String(),
			Mailbox: inv.Mailbox[:], Token: inv.Token[:], Added: c.now().UnixMilli(),
		}
		if err := tx.PutContact(k); err != nil {
			return err
		}
		if introID, err = c.newID(); err != nil {
			return err
		}
		intro := &content{
			Kind: KindIntroduction, ID: introID, Sent: c.now().UnixMilli(),
			Secret: inv.Secret, Mailbox: c.mailbox, Token: c.token, Name: c.name, Relay: c.relay.String(),
		}
		if err := c.encryptTo(tx, k, s, intro); err != nil {
			return err
		}
		if err := saveSession(k, s); err != nil {
			return err
		}
		return tx.PutContact(k)
	})
	if err != nil {
		return "", err
	}
	res, err := c.flush(ctx)
	if err != nil {
		return name, err
	}
	if !res.sent[introID] {
		return name, ErrQueued
	}
	return name, nil
}

// fetchBundle asks the inviter's relay, on an anonymous connection, for a
// prekey bundle of the inviter's mailbox.
func (c *Client) fetchBundle(ctx context.Context, inv link.Invite) (*session.Bundle, error) {
	anon, err := channel.GenerateKeyPair(c.rand)
	if err != nil {
		return nil, err
	}
	fc, err := c.dial(ctx, inv.Relay, anon)
	if err != nil {
		return nil, err
	}
	cn := newConn(fc)
	defer cn.Close()
	if err := cn.send(ctx, wire.GetBundle{ReqID: 1, Mailbox: inv.Mailbox, Token: inv.Token}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	for {
		m, err := cn.next(ctx, responseTimeout)
		if err != nil {
			return nil, err
		}
		switch m := m.(type) {
		case wire.Bundle:
			if m.ReqID != 1 {
				continue
			}
			return assembleBundle(inv.Identity, &m)
		case wire.Error:
			if m.ReqID != 1 {
				continue
			}
			if m.Code == wire.CodeDenied || m.Code == wire.CodeNotFound {
				return nil, errors.New("the inviter's relay does not know this invite (it may be stale or the inviter has not connected yet)")
			}
			return nil, fmt.Errorf("the inviter's relay refused the invite: %s", m.Code)
		}
	}
}

// assembleBundle turns the relay's opaque records into a session bundle:
// version(1)=1 || identity(32) || signed record || [one-time record] || KEM
// record (docs/protocol.md section 2.4). The identity comes from the
// invite, so the signatures Initiate checks bind the prekeys to it.
func assembleBundle(identity [32]byte, m *wire.Bundle) (*session.Bundle, error) {
	b := make([]byte, 0, 1+32+len(m.Signed)+len(m.OneTime)+len(m.KEM))
	b = append(b, 0x01)
	b = append(b, identity[:]...)
	b = append(b, m.Signed...)
	b = append(b, m.OneTime...)
	b = append(b, m.KEM...)
	bundle, err := session.ParseBundle(b)
	if err != nil {
		return nil, fmt.Errorf("the inviter's prekeys are malformed: %w", err)
	}
	return bundle, nil
}

// SafetyNumber returns the 60-digit safety number of the user and the
// named contact, in twelve groups of five: the same on both sides, so two
// people can compare them (in person or over another channel) to rule out
// a relay or invite link that swapped keys. Each side's stable identifier
// is its own identity key.
func (c *Client) SafetyNumber(ctx context.Context, contact string) (string, error) {
	var remote session.PublicIdentity
	err := c.store.Update(ctx, func(tx *localstore.Tx) error {
		k, err := findContact(tx, contact)
		if err != nil {
			return err
		}
		remote = session.PublicIdentity(k.Identity)
		return nil
	})
	if err != nil {
		return "", err
	}
	local := c.identity.Public()
	f, err := session.SafetyNumber(local, remote, local[:], remote[:])
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
