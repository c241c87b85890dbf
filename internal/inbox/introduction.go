package inbox

import (
	"fmt"

	"github.com/ferry-im/ferry/internal/account"
	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/invite"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/prekeys"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/session"
)

// handleIntroduction takes an introduction from a known contact (a
// repeated Accept): there is nothing to do.
func (b *batch) handleIntroduction(p *peer, c *content.Content) error {
	b.in.a.Log.Info("ignored an introduction from a known contact")
	return nil
}

// confirm records that a Pending contact answered in its session, so it
// took the user's introduction.
func (b *batch) confirm(p *peer) {
	p.k.Status = localstore.Confirmed
	b.res.contacts = append(b.res.contacts, p.k)
}

// introduce handles an initial message from an unknown identity: it must
// carry an introduction. With an outstanding invite secret the sender
// becomes a contact; with a used, unknown or expired one the sender gets a
// refusal (and a reused invite a notice for the user). Anything else is
// dropped. A rejected introduction leaves the prekeys as they were.
func (b *batch) introduce(sender session.PublicIdentity, inner []byte) error {
	a, log := b.in.a, b.in.a.Log
	if !session.IsInitialMessage(inner) {
		log.Warn("dropped a message from an unknown sender")
		return nil
	}
	ps, err := b.loadPrekeys()
	if err != nil {
		return err
	}
	// Respond on a copy, so a rejected introduction keeps the prekeys.
	trial, err := clonePrekeys(ps)
	if err != nil {
		return err
	}
	s, pt, _, err := session.Respond(a.Rand, a.Identity, trial, inner, account.RatchetAD)
	if err != nil {
		log.Warn("dropped an initial message that does not decrypt", "err", err)
		return nil
	}
	// The sealed sender is who the contact will be stored as; it must be
	// the identity that made the PQXDH handshake, or anyone could re-seal
	// someone else's initial message under their own identity.
	if !s.RemoteIdentity().Equal(sender) {
		log.Warn("dropped an initial message whose sealed sender is not its PQXDH identity")
		return nil
	}
	s.Rand = a.Rand
	c, err := content.Parse(pt)
	intro, ok := errOrBody[*content.Introduction](c, err)
	if !ok || link.CheckName(intro.Name) != nil {
		log.Warn("dropped a first message that is not a valid introduction")
		return nil
	}
	if _, err := link.ParseRelay(intro.Relay); err != nil {
		log.Warn("dropped an introduction with a bad relay link", "err", err)
		return nil
	}
	verdict, first, err := invite.Check(b.tx, b.ks, intro.Secret, b.now)
	if err != nil {
		return err
	}
	switch verdict {
	case invite.Accepted:
		return b.addContact(sender, s, trial, c.ID, intro)
	case invite.Used:
		if err := b.noteReuse(first, intro.Name); err != nil {
			return err
		}
		return b.refuse(sender, s, c.ID, intro, content.RefusedUsed)
	case invite.Expired:
		return b.refuse(sender, s, c.ID, intro, content.RefusedExpired)
	}
	return b.refuse(sender, s, c.ID, intro, content.RefusedUnknown)
}

// errOrBody returns c's body as a T, if c parsed and is one.
func errOrBody[T content.Body](c *content.Content, err error) (T, bool) {
	var zero T
	if err != nil {
		return zero, false
	}
	t, ok := c.Body.(T)
	return t, ok
}

// addContact stores the sender of an accepted introduction as a contact
// with its conversation and session, keeps the prekey set without the
// prekeys it used, queues a delivery receipt for the introduction (so the
// invitee learns it was taken) and leaves the user a notice.
func (b *batch) addContact(sender session.PublicIdentity, s *session.Session, ps *session.PrekeySet, introID [16]byte, intro *content.Introduction) error {
	k := &localstore.Contact{
		Name: invite.UniqueName(b.ks, intro.Name), Identity: sender[:], RelayLink: intro.Relay,
		Mailbox: intro.Mailbox[:], Token: intro.Token[:], Added: b.now.UnixMilli(),
	}
	if err := b.tx.PutContact(k); err != nil {
		return err
	}
	conv := &localstore.Conversation{Kind: localstore.Direct, Contact: k.ID}
	if err := b.tx.PutConversation(conv); err != nil {
		return err
	}
	if err := invite.MarkUsed(b.tx, intro.Secret, k, b.now); err != nil {
		return err
	}
	b.prekeys.ps, b.prekeys.changed = ps, true
	if err := b.rotateInviteToken(k, intro.Secret); err != nil {
		return err
	}
	if err := b.tx.PutContact(k); err != nil {
		return err
	}
	b.ks = append(b.ks, k)
	b.byIdentity[sender.Canonical()] = k
	b.addPeer(&peer{k: k, conv: conv, s: s, delivered: [][16]byte{introID}, receiptNow: true})
	b.res.contacts = append(b.res.contacts, k)
	b.in.a.Log.Info("new contact", "name", k.Name)
	return b.notice(conv.ID, k, NoticeNewContact, fmt.Sprintf(
		"%s accepted your invite and is now a contact. Compare your safety numbers with %s over another channel to be sure it is them.",
		k.Name, k.Name))
}

// noteReuse tells the user that an introduction came with the secret of an
// invite the contact first already used: the link was copied, and either
// first or the newcomer is not who the user meant to invite.
func (b *batch) noteReuse(first *localstore.Contact, newcomer string) error {
	conv, err := b.tx.DirectConversation(first.ID)
	if err != nil {
		return err
	}
	return b.notice(conv.ID, first, NoticeInviteReuse, fmt.Sprintf(
		"someone else (calling themselves %q) also used the invite link that %s used; the link was copied, and Ferry refused them. "+
			"Compare safety numbers with %s over another channel.", newcomer, first.Name, first.Name))
}

// refuse queues a refusal to the sender of an introduction the user did
// not accept, in the session the introduction started (which is then
// dropped), to the mailbox the introduction names.
func (b *batch) refuse(sender session.PublicIdentity, s *session.Session, introID [16]byte, intro *content.Introduction, reason byte) error {
	b.in.a.Log.Warn("refused an introduction", "reason", int(reason))
	id, err := b.in.a.NewID()
	if err != nil {
		return err
	}
	c := &content.Content{ID: id, Sent: b.now.UnixMilli(), Body: &content.Refusal{Introduction: introID, Reason: reason}}
	to := &localstore.Destination{Relay: intro.Relay, Mailbox: intro.Mailbox, Token: intro.Token}
	if err := b.in.a.SealTo(b.tx, to, sender, s, c); err != nil {
		return err
	}
	b.res.queued = true
	return nil
}

// prekeyState is the profile's prekey set, loaded by the batch's first
// introduction.
type prekeyState struct {
	prof    *localstore.Profile
	ps      *session.PrekeySet
	changed bool
	tokens  bool // prof.Tokens changed
}

func (b *batch) loadPrekeys() (*session.PrekeySet, error) {
	if b.prekeys.prof == nil {
		prof, err := b.tx.Profile()
		if err != nil {
			return nil, err
		}
		ps, err := prekeys.Load(prof)
		if err != nil {
			return nil, err
		}
		b.prekeys.prof, b.prekeys.ps = prof, ps
	}
	return b.prekeys.ps, nil
}

// savePrekeys saves the prekey set if introductions used some of it,
// topping the one-time pools up (to be uploaded after the batch).
func (b *batch) savePrekeys() error {
	if !b.prekeys.changed {
		if b.prekeys.tokens {
			return b.tx.PutProfile(b.prekeys.prof)
		}
		return nil
	}
	more, err := b.in.opts.Prekeys.Replenish(b.in.a, b.prekeys.ps)
	if err != nil {
		return err
	}
	b.res.needUpload = b.res.needUpload || more
	return prekeys.Save(b.tx, b.prekeys.prof, b.prekeys.ps)
}

func clonePrekeys(ps *session.PrekeySet) (*session.PrekeySet, error) {
	bs, err := ps.MarshalBinary()
	if err != nil {
		return nil, err
	}
	c := new(session.PrekeySet)
	return c, c.UnmarshalBinary(bs)
}
