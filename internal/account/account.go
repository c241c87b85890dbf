// Package account is the user's account as the client's engine sees it:
// the profile's keys (identity, device key, mailbox, delivery token, own
// relay) loaded from the local store, with the store itself, the clock,
// the randomness, the logger and the relay dialer every part shares; and
// the one way a content leaves for a contact (Seal: ratchet, sealed
// sender, outbox).
//
// It is not the API (package ferry is) and it decides nothing: the
// outbox, the inbox, invites and prekeys are packages of their own.
package account

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/rankcache"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/session"
	"github.com/ferry-im/ferry/wire"
)

// ContentType is the sealed-sender content type of Ferry's messages: the
// inner bytes are a session message (initial or ratchet) whose plaintext
// is a content (package content).
const ContentType = 0x01

// RatchetAD is the associated data every ratchet message authenticates.
var RatchetAD = []byte("ferry content v1")

// Account is a loaded profile. Its fields do not change after Load.
type Account struct {
	Home     string
	Store    *localstore.Store
	Identity *session.Identity
	Device   channel.KeyPair
	Mailbox  [16]byte
	Token    [32]byte
	Relay    link.Relay
	Name     string

	Rand   io.Reader
	Now    func() time.Time
	Log    *slog.Logger
	Dialer *relayclient.Dialer
	// Rankings are the own relay's transport rankings; nil for none.
	Rankings *rankcache.Cache
	// ReceiptDelay returns how long a new batch of receipts waits before
	// it is sent. If nil, a uniform random delay between MinReceiptDelay
	// and MaxReceiptDelay, drawn from Rand.
	ReceiptDelay func() time.Duration
}

// The bounds of the receipts' random delay (docs/protocol.md section
// 6.10): a relay watching the time of a delivery and of the receipt
// cannot link them within less than this.
const (
	MinReceiptDelay = time.Second
	MaxReceiptDelay = 10 * time.Second
)

func (a *Account) receiptDelay() time.Duration {
	if a.ReceiptDelay != nil {
		return a.ReceiptDelay()
	}
	var b [8]byte
	if _, err := io.ReadFull(a.Rand, b[:]); err != nil {
		return MaxReceiptDelay
	}
	span := uint64(MaxReceiptDelay - MinReceiptDelay)
	return MinReceiptDelay + time.Duration(binary.BigEndian.Uint64(b[:])%(span+1))
}

// DeferReceipt adds ids to contact k's batch of pending receipts of
// status (the caller writes k): the batch is sealed and queued once due
// (SealDueReceipts), a random delay after its first id, so that the relay
// cannot link a delivery to its receipt by their times.
func (a *Account) DeferReceipt(k *localstore.Contact, status byte, ids [][16]byte) {
	if len(ids) == 0 {
		return
	}
	if k.Receipts == nil {
		k.Receipts = &localstore.PendingReceipts{Due: a.Now().Add(a.receiptDelay()).UnixMilli()}
	}
	if status == content.ReceiptRead {
		k.Receipts.Read = append(k.Receipts.Read, ids...)
	} else {
		k.Receipts.Delivered = append(k.Receipts.Delivered, ids...)
	}
}

// SealDueReceipts seals and queues every contact's batch of receipts
// that is due, one receipt per status (more if the ids need them). It
// reports whether it queued any, and when the next pending batch is due
// (zero if none).
func (a *Account) SealDueReceipts(tx *localstore.Tx) (queued bool, next time.Time, err error) {
	ks, err := tx.Contacts()
	if err != nil {
		return false, time.Time{}, err
	}
	now := a.Now()
	for _, k := range ks {
		r := k.Receipts
		if r == nil {
			continue
		}
		if due := time.UnixMilli(r.Due); due.After(now) {
			if next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		k.Receipts = nil
		if !k.Blocked && k.Status != localstore.Refused && len(k.Session) > 0 {
			s, err := a.Session(k)
			if err != nil {
				return queued, next, err
			}
			for _, b := range []struct {
				status byte
				ids    [][16]byte
			}{{content.ReceiptDelivered, r.Delivered}, {content.ReceiptRead, r.Read}} {
				q, err := a.QueueReceipt(tx, k, s, b.status, b.ids)
				if err != nil {
					return queued, next, err
				}
				queued = queued || q
			}
			if err := SaveSession(k, s); err != nil {
				return queued, next, err
			}
		}
		if err := tx.PutContact(k); err != nil {
			return queued, next, err
		}
	}
	return queued, next, nil
}

// Load fills a's keys from the profile p.
func (a *Account) Load(p *localstore.Profile) error {
	a.Identity = new(session.Identity)
	if err := a.Identity.UnmarshalBinary(p.Identity); err != nil {
		return fmt.Errorf("load identity: %w", err)
	}
	if len(p.Device) != 32 || len(p.Token) != 32 {
		return fmt.Errorf("load profile: %w", localstore.ErrCorrupt)
	}
	dev, err := channel.NewKeyPair([32]byte(p.Device))
	if err != nil {
		return fmt.Errorf("load device key: %w", err)
	}
	a.Device = dev
	a.Mailbox = wire.MailboxID(dev.Public)
	a.Token = [32]byte(p.Token)
	a.Name = p.Name
	if a.Relay, err = link.ParseRelay(p.RelayLink); err != nil {
		return fmt.Errorf("load relay link: %w", err)
	}
	return nil
}

// NewID returns a fresh random message id.
func (a *Account) NewID() ([16]byte, error) {
	var id [16]byte
	_, err := io.ReadFull(a.Rand, id[:])
	return id, err
}

// Session restores a contact's session.
func (a *Account) Session(k *localstore.Contact) (*session.Session, error) {
	s := &session.Session{Rand: a.Rand}
	if err := s.UnmarshalBinary(k.Session); err != nil {
		return nil, fmt.Errorf("load session with %s: %w", k.Name, err)
	}
	return s, nil
}

// SaveSession stores s as k's session state in k (the caller writes k).
func SaveSession(k *localstore.Contact, s *session.Session) error {
	b, err := s.MarshalBinary()
	if err != nil {
		return err
	}
	k.Session = b
	return nil
}

// Seal encrypts c for contact k with its session s, seals the result under
// sealed sender and queues the envelope in the outbox, all inside tx. The
// caller saves s (in k) in the same transaction.
func (a *Account) Seal(tx *localstore.Tx, k *localstore.Contact, s *session.Session, c *content.Content) error {
	env, err := a.seal(k, s, c)
	if err != nil {
		return err
	}
	return tx.Enqueue(&localstore.Outgoing{ID: c.ID, Contact: k.ID, Created: a.Now(), Envelope: env})
}

// SealTo is Seal for a destination that is not a contact (an answer to an
// introduction the user did not accept).
func (a *Account) SealTo(tx *localstore.Tx, to *localstore.Destination, remote session.PublicIdentity, s *session.Session, c *content.Content) error {
	env, err := a.seal(&localstore.Contact{Identity: remote[:]}, s, c)
	if err != nil {
		return err
	}
	return tx.Enqueue(&localstore.Outgoing{ID: c.ID, Dest: to, Created: a.Now(), Envelope: env})
}

func (a *Account) seal(k *localstore.Contact, s *session.Session, c *content.Content) ([]byte, error) {
	pt, err := c.Marshal()
	if err != nil {
		return nil, err
	}
	inner, err := s.Encrypt(pt, RatchetAD)
	if err != nil {
		return nil, fmt.Errorf("encrypt message: %w", err)
	}
	env, err := session.Seal(a.Rand, a.Identity, session.PublicIdentity(k.Identity), ContentType, inner)
	if err != nil {
		return nil, fmt.Errorf("seal message: %w", err)
	}
	if len(env) > wire.MaxEnvelope {
		return nil, fmt.Errorf("encrypt message: envelope of %d bytes: %w", len(env), wire.ErrTooLarge)
	}
	return env, nil
}

// QueueReceipt queues receipts of status for ids to contact k with its
// session s, as many as the ids need, and reports whether it queued any.
func (a *Account) QueueReceipt(tx *localstore.Tx, k *localstore.Contact, s *session.Session, status byte, ids [][16]byte) (bool, error) {
	queued := false
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), content.MaxReceiptIDs)]
		ids = ids[len(chunk):]
		id, err := a.NewID()
		if err != nil {
			return queued, err
		}
		c := &content.Content{ID: id, Sent: a.Now().UnixMilli(), Body: &content.Receipt{Status: status, IDs: chunk}}
		if err := a.Seal(tx, k, s, c); err != nil {
			return queued, err
		}
		queued = true
	}
	return queued, nil
}
