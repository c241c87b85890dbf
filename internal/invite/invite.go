// Package invite makes contacts (docs/client.md section 3): the inviter's
// one-time invite links and the checks of the secret an introduction
// brings back, and the invitee's acceptance of a link (fetching the
// inviter's bundle, starting the session, queueing the introduction).
//
// It is not the receive pipeline: the inbox hands it the introductions
// that arrive and stores what it decides.
package invite

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
	"github.com/ferry-im/ferry/internal/account"
	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/session"
	"github.com/ferry-im/ferry/wire"
)

// TTL is how long an invite link stays usable.
const TTL = 7 * 24 * time.Hour

// Errors callers branch on.
var (
	// ErrOwnInvite means Accept was given the user's own invite.
	ErrOwnInvite = errors.New("this is your own invite")
	// ErrStale means the inviter's relay does not know the invite.
	ErrStale = errors.New("the inviter's relay does not know this invite (it may be stale, or the inviter has not connected yet)")
)

// An invite secret is issued(4) || random(12): issued is the Unix time in
// seconds, big-endian, at which Make made it. Only the inviter makes and
// reads secrets (the invitee copies it into its introduction), and an
// introduction counts only if its secret is outstanding, so the time read
// back is the one Make wrote.

// Make records a new one-time invite secret with a delivery token made
// for this invite alone (docs/protocol.md section 6.2), and returns the
// invite link for one new contact. The relay learns the token at the next
// prekeys.Policy.Sync on a connection to it (the caller runs one); until
// then the invitee's Accept fails with ErrStale. The token is revoked
// when the invite expires, or, once the invitee is a contact, when the
// contact has a token of its own.
func Make(ctx context.Context, a *account.Account) (string, error) {
	var secret [16]byte
	if _, err := io.ReadFull(a.Rand, secret[4:]); err != nil {
		return "", err
	}
	now := a.Now()
	binary.BigEndian.PutUint32(secret[:4], uint32(now.Unix()))
	var token [32]byte
	if _, err := io.ReadFull(a.Rand, token[:]); err != nil {
		return "", err
	}
	if err := a.Store.Update(ctx, func(tx *localstore.Tx) error {
		if err := tx.AddInvite(secret[:], now); err != nil {
			return err
		}
		prof, err := tx.Profile()
		if err != nil {
			return err
		}
		prof.Tokens = append(prof.Tokens, localstore.OwnToken{Token: token[:], Invite: secret[:], Expires: now.Add(TTL).UnixMilli()})
		return tx.PutProfile(prof)
	}); err != nil {
		return "", err
	}
	inv := link.Invite{Relay: a.Relay, Identity: a.Identity.Public(), Mailbox: a.Mailbox, Token: token, Secret: secret, Name: a.Name}
	return inv.String(), nil
}

// Verdict is what the inviter makes of an introduction's secret.
type Verdict int

// Verdicts.
const (
	Accepted Verdict = iota // the secret was outstanding: now taken
	Used                    // a contact used it before (FirstUser says which)
	Unknown                 // never issued here, or altered
	Expired                 // outstanding, but older than TTL
)

// Check takes the introduction's secret if it is outstanding and
// current. For a secret a contact used before it reports Used with that
// contact (the marker stays, so every later use is reported too).
func Check(tx *localstore.Tx, ks []*localstore.Contact, secret [16]byte, now time.Time) (Verdict, *localstore.Contact, error) {
	ok, err := tx.TakeInvite(secret[:])
	if err != nil {
		return 0, nil, err
	}
	if ok {
		if now.Sub(time.Unix(int64(binary.BigEndian.Uint32(secret[:4])), 0)) > TTL {
			return Expired, nil, nil
		}
		return Accepted, nil, nil
	}
	for _, k := range ks {
		if used, err := tx.TakeInvite(usedMarker(secret, k.ID)); err != nil || used {
			if err == nil {
				err = tx.AddInvite(usedMarker(secret, k.ID), now)
			}
			return Used, k, err
		}
	}
	return Unknown, nil, nil
}

// MarkUsed records that the contact k came with secret, so that a later
// introduction with the same secret names k.
func MarkUsed(tx *localstore.Tx, secret [16]byte, k *localstore.Contact, now time.Time) error {
	return tx.AddInvite(usedMarker(secret, k.ID), now)
}

// usedMarker is what the invites table holds for a secret used by the
// contact with this id.
func usedMarker(secret [16]byte, contact int64) []byte {
	h := sha256.New()
	h.Write([]byte("ferry used invite\x00"))
	h.Write(secret[:])
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(contact)))
	return h.Sum(nil)[:16]
}

// New is what Accept made: the new contact (Pending) and its
// conversation.
type New struct {
	Contact      *localstore.Contact
	Conversation *localstore.Conversation
}

// Accept accepts an invite link: it fetches the inviter's prekey bundle
// from the inviter's relay on an anonymous connection, starts a session
// (PQXDH), stores the inviter as a Pending contact with a direct
// conversation, and queues an introduction (the user's name, relay,
// mailbox and delivery token, and the invite's secret). The caller
// flushes the outbox. If the inviter's relay cannot be reached, nothing
// is stored and the error wraps relayclient.ErrUnreachable.
func Accept(ctx context.Context, a *account.Account, invite string) (*New, error) {
	inv, err := link.ParseInvite(invite)
	if err != nil {
		return nil, err
	}
	if session.PublicIdentity(inv.Identity).Equal(a.Identity.Public()) {
		return nil, ErrOwnInvite
	}
	// Check before fetching: a fetch uses up one of the inviter's
	// one-time prekeys.
	if err := a.Store.Update(ctx, func(tx *localstore.Tx) error { return checkNotContact(tx, inv.Identity) }); err != nil {
		return nil, err
	}
	bundle, err := fetchBundle(ctx, a, inv)
	if err != nil {
		return nil, err
	}
	s, err := session.Initiate(a.Rand, a.Identity, bundle)
	if err != nil {
		return nil, fmt.Errorf("start session: %w", err)
	}
	s.Rand = a.Rand
	// The inviter reaches the user with a token of the user's own made
	// for it, registered before the introduction that carries it leaves;
	// if the user's relay cannot be reached, with the profile's token.
	own, registered := ownToken(ctx, a)
	var out *New
	err = a.Store.Update(ctx, func(tx *localstore.Tx) (err error) {
		out, err = store(tx, a, inv, s, own, registered)
		return err
	})
	return out, err
}

// ownToken makes a delivery token for a new contact and registers it
// with the user's relay, reporting whether it could; if not, the token is
// the profile's.
func ownToken(ctx context.Context, a *account.Account) ([32]byte, bool) {
	var t [32]byte
	if _, err := io.ReadFull(a.Rand, t[:]); err != nil {
		return a.Token, false
	}
	cn, err := a.Dialer.Dial(ctx, a.Relay, a.Device)
	if err == nil {
		err = cn.AddToken(ctx, t)
		cn.Close()
	}
	if err != nil {
		a.Log.Info("the new contact gets the profile's delivery token: the relay did not take a token of its own", "err", err)
		return a.Token, false
	}
	return t, true
}

// store saves the inviter as a contact and queues the introduction.
func store(tx *localstore.Tx, a *account.Account, inv link.Invite, s *session.Session, own [32]byte, registered bool) (*New, error) {
	if err := checkNotContact(tx, inv.Identity); err != nil {
		return nil, err
	}
	ks, err := tx.Contacts()
	if err != nil {
		return nil, err
	}
	introID, err := a.NewID()
	if err != nil {
		return nil, err
	}
	k := &localstore.Contact{
		Name: UniqueName(ks, inv.Name), Identity: inv.Identity[:], RelayLink: inv.Relay.String(),
		Mailbox: inv.Mailbox[:], Token: inv.Token[:], Added: a.Now().UnixMilli(),
		Status: localstore.Pending, Introduction: introID,
	}
	if err := tx.PutContact(k); err != nil {
		return nil, err
	}
	conv := &localstore.Conversation{Kind: localstore.Direct, Contact: k.ID}
	if err := tx.PutConversation(conv); err != nil {
		return nil, err
	}
	if registered {
		k.MyToken = own[:]
		prof, err := tx.Profile()
		if err != nil {
			return nil, err
		}
		prof.Tokens = append(prof.Tokens, localstore.OwnToken{Token: own[:], Contact: k.ID, Registered: true})
		if err := tx.PutProfile(prof); err != nil {
			return nil, err
		}
	}
	intro := &content.Content{ID: introID, Sent: a.Now().UnixMilli(), Body: &content.Introduction{
		Secret: inv.Secret, Mailbox: a.Mailbox, Token: own, Name: a.Name, Relay: a.Relay.String(),
	}}
	if err := a.Seal(tx, k, s, intro); err != nil {
		return nil, err
	}
	if err := account.SaveSession(k, s); err != nil {
		return nil, err
	}
	return &New{Contact: k, Conversation: conv}, tx.PutContact(k)
}

// checkNotContact fails if identity belongs to a contact already (up to
// the sign bit: the two encodings authenticate alike).
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

// UniqueName returns the name a contact who chose want gets: want, or
// want-2, want-3... if a contact has it. A name that could pass for
// Ferry itself (the sender of notices: "ferry", "[Ferry]", "* ferry"...)
// gets " (contact)" added first.
func UniqueName(ks []*localstore.Contact, want string) string {
	if strings.EqualFold(strings.Trim(want, " []*()<>-_:.!#"), "ferry") {
		want += " (contact)"
	}
	taken := make(map[string]bool, len(ks))
	for _, k := range ks {
		taken[k.Name] = true
	}
	if !taken[want] {
		return want
	}
	for i := 2; ; i++ {
		if n := want + "-" + strconv.Itoa(i); !taken[n] {
			return n
		}
	}
}

// fetchBundle asks the inviter's relay, on an anonymous connection, for a
// prekey bundle of the inviter's mailbox.
func fetchBundle(ctx context.Context, a *account.Account, inv link.Invite) (*session.Bundle, error) {
	anon, err := channel.GenerateKeyPair(a.Rand)
	if err != nil {
		return nil, err
	}
	cn, err := a.Dialer.Dial(ctx, inv.Relay, anon)
	if err != nil {
		return nil, err
	}
	defer cn.Close()
	b, err := cn.GetBundle(ctx, inv.Mailbox, inv.Token)
	var re *relayclient.RefusedError
	if errors.As(err, &re) {
		if re.Code == wire.CodeDenied || re.Code == wire.CodeNotFound {
			return nil, ErrStale
		}
		return nil, fmt.Errorf("the inviter's relay refused the invite: %s", re.Code)
	}
	if err != nil {
		return nil, err
	}
	return assembleBundle(inv.Identity, b)
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
