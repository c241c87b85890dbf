package account

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/session"
	"github.com/ferry-im/ferry/wire"
)

// ContentTypeDirect is the sealed-sender content type of a content sealed
// to the recipient's identity key without a session (docs/client.md
// section 10): only a group's welcome and re-key to a member who is not a
// contact travel so.
const ContentTypeDirect = 0x02

// Group messages (docs/client.md section 10). The inner bytes of a group
// envelope (session.GroupKeys.SealGroup) are
//
//	sender identity(32) || distribution(93) || signature(64) || sender-key message
//
// where distribution is the sender's current sender key (session 3.5) and
// signature is the sender's identity signature over
// "ferry group key v1" || group id || distribution: a member who lacks the
// sender's key (it joined later, or the sender re-keyed) learns it from
// any message, and only from the sender.
const (
	groupKeyLabel  = "ferry group key v1"
	groupInnerHead = 32 + content.DistributionLen + 64
)

// ErrNotMember means a group envelope came from someone who is not a
// member of the group it opened for.
var ErrNotMember = errors.New("not a member of the group")

// GroupKeySigned is what a member signs to vouch for its distribution.
func GroupKeySigned(group [16]byte, dist []byte) []byte {
	return append(append([]byte(groupKeyLabel), group[:]...), dist...)
}

// LoadGroupKeys restores g's sender keys.
func (a *Account) LoadGroupKeys(g *localstore.GroupState) (*session.Group, error) {
	sg := new(session.Group)
	if err := sg.UnmarshalBinary(g.SenderKeys); err != nil {
		return nil, fmt.Errorf("load group %s: %w", g.Name, err)
	}
	return sg, nil
}

// SaveGroupKeys stores sg in g (the caller writes g).
func SaveGroupKeys(g *localstore.GroupState, sg *session.Group) error {
	b, err := sg.MarshalBinary()
	if err != nil {
		return err
	}
	g.SenderKeys = b
	return nil
}

// SealGroup encrypts c with the user's sender key in sg, seals it under
// g's envelope key and queues one envelope for every other member: the
// outbox fans it out, one upload per relay. The caller saves sg in g.
func (a *Account) SealGroup(tx *localstore.Tx, g *localstore.GroupState, sg *session.Group, c *content.Content) error {
	pt, err := c.Marshal()
	if err != nil {
		return err
	}
	dist := sg.Distribution()
	msg, err := sg.Encrypt(pt)
	if err != nil {
		return fmt.Errorf("encrypt group message: %w", err)
	}
	self := a.Identity.Public()
	inner := make([]byte, 0, groupInnerHead+len(msg))
	inner = append(inner, self[:]...)
	inner = append(inner, dist...)
	inner = append(inner, a.Identity.Sign(GroupKeySigned(g.ID, dist))...)
	inner = append(inner, msg...)
	env, err := session.NewGroupKeys(g.EnvelopeKey).SealGroup(a.Rand, inner)
	if err != nil {
		return err
	}
	if len(env) > wire.MaxEnvelope {
		return fmt.Errorf("encrypt group message: envelope of %d bytes: %w", len(env), wire.ErrTooLarge)
	}
	dest := &localstore.Destination{Group: g.ID}
	for _, m := range g.Members {
		dest.Fanout = append(dest.Fanout, localstore.Recipient{Relay: m.Relay, Mailbox: m.Mailbox, Token: m.Token})
	}
	if len(dest.Fanout) == 0 {
		return nil // alone in the group: nothing to send
	}
	return tx.Enqueue(&localstore.Outgoing{ID: c.ID, Dest: dest, Created: a.Now(), Envelope: env})
}

// GroupInner is a group envelope's opened inner bytes, split.
type GroupInner struct {
	Sender       session.PublicIdentity
	Distribution []byte
	Message      []byte
}

// OpenGroupInner splits inner and checks the sender's signature over its
// distribution; it does not check membership.
func OpenGroupInner(group [16]byte, inner []byte) (*GroupInner, error) {
	if len(inner) < groupInnerHead {
		return nil, fmt.Errorf("group message: %w", session.ErrMalformed)
	}
	gi := &GroupInner{Sender: session.PublicIdentity(inner[:32]), Distribution: bytes.Clone(inner[32 : 32+content.DistributionLen]),
		Message: inner[groupInnerHead:]}
	sig := inner[32+content.DistributionLen : groupInnerHead]
	if !gi.Sender.Verify(GroupKeySigned(group, gi.Distribution), sig) {
		return nil, fmt.Errorf("group message: the sender key's signature: %w", session.ErrDecrypt)
	}
	return gi, nil
}

// SealDirect sends c to a member over the best channel there is: the
// session, if the member is a contact with one (the caller saves the
// session: it is returned), else sealed to its identity key alone
// (ContentTypeDirect), queued for its mailbox.
func (a *Account) SealDirect(tx *localstore.Tx, m *localstore.GroupMember, c *content.Content) (*localstore.Contact, *session.Session, error) {
	if k, err := tx.Contact(m.Contact); err == nil && k.Status != localstore.Member && len(k.Session) > 0 && !k.Blocked {
		s, err := a.Session(k)
		if err != nil {
			return nil, nil, err
		}
		return k, s, a.Seal(tx, k, s, c)
	}
	pt, err := c.Marshal()
	if err != nil {
		return nil, nil, err
	}
	env, err := session.Seal(a.Rand, a.Identity, session.PublicIdentity(m.Identity), ContentTypeDirect, pt)
	if err != nil {
		return nil, nil, fmt.Errorf("seal message: %w", err)
	}
	dest := &localstore.Destination{Relay: m.Relay, Mailbox: m.Mailbox, Token: m.Token}
	return nil, nil, tx.Enqueue(&localstore.Outgoing{ID: c.ID, Dest: dest, Created: a.Now(), Envelope: env})
}

// MemberRow returns the contacts row that stands for a group member with
// identity id: the contact, if the member is one, else a row of status
// Member, made now if there is none.
func (a *Account) MemberRow(tx *localstore.Tx, id [32]byte, name, relay string, mb [16]byte, token [32]byte) (int64, error) {
	ks, err := tx.AllContacts()
	if err != nil {
		return 0, err
	}
	canon := session.PublicIdentity(id).Canonical()
	var member *localstore.Contact
	for _, k := range ks {
		if session.PublicIdentity(k.Identity).Canonical() == canon {
			if k.Status != localstore.Member {
				return k.ID, nil
			}
			member = k
		}
	}
	if member != nil {
		return member.ID, nil
	}
	k := &localstore.Contact{Name: name, Identity: id[:], RelayLink: relay, Mailbox: mb[:], Token: token[:],
		Added: a.Now().UnixMilli(), Status: localstore.Member}
	return k.ID, tx.PutContact(k)
}

// Rekey gives group g a new envelope key, without the members in gone
// (removing them from g and from sg, which rotates the user's own sender
// key), and sends the key to every remaining member over SealDirect. The
// caller saves sg in g and writes g.
func (a *Account) Rekey(tx *localstore.Tx, g *localstore.GroupState, sg *session.Group, gone [][32]byte) error {
	var key [32]byte
	if _, err := a.Rand.Read(key[:]); err != nil {
		return err
	}
	for _, id := range gone {
		NoteFormer(g, id, false)
		g.Members = slicesDeleteMember(g.Members, id)
		g.Admins = slicesDeleteID(g.Admins, id)
		if _, err := sg.RemoveMember(a.Rand, session.PublicIdentity(id)); err != nil {
			return err
		}
	}
	if g.Epoch == ^uint32(0) {
		return errors.New("the group has been re-keyed too often; make a new group")
	}
	g.PrevKey, g.EnvelopeKey, g.Epoch = g.EnvelopeKey, key, g.Epoch+1
	for i := range g.Members {
		id, err := a.NewID()
		if err != nil {
			return err
		}
		c := &content.Content{ID: id, Sent: a.Now().UnixMilli(), Body: &content.GroupControl{
			Op: content.GroupRekey, Group: g.ID, Epoch: g.Epoch, EnvelopeKey: key, Identities: gone}}
		k, s, err := a.SealDirect(tx, &g.Members[i], c)
		if err != nil {
			return err
		}
		if k != nil {
			if err := SaveSession(k, s); err != nil {
				return err
			}
			if err := tx.PutContact(k); err != nil {
				return err
			}
		}
	}
	return nil
}

func slicesDeleteMember(ms []localstore.GroupMember, id [32]byte) []localstore.GroupMember {
	out := ms[:0]
	for _, m := range ms {
		if m.Identity != id {
			out = append(out, m)
		}
	}
	return out
}

func slicesDeleteID(ids [][32]byte, id [32]byte) [][32]byte {
	out := ids[:0]
	for _, x := range ids {
		if x != id {
			out = append(out, x)
		}
	}
	return out
}

// IsAdmin reports whether id is one of g's admins.
func IsAdmin(g *localstore.GroupState, id [32]byte) bool {
	for _, a := range g.Admins {
		if a == id {
			return true
		}
	}
	return false
}

// FindMember returns g's member with identity id (up to the sign bit),
// or nil.
func FindMember(g *localstore.GroupState, id session.PublicIdentity) *localstore.GroupMember {
	canon := id.Canonical()
	for i := range g.Members {
		if session.PublicIdentity(g.Members[i].Identity).Canonical() == canon {
			return &g.Members[i]
		}
	}
	return nil
}

// maxFormer bounds the former members a group remembers (the oldest go).
const maxFormer = 1000

// NoteFormer records that the member with identity id is leaving g (a
// re-key takes it out), keeping its name for notices that come after;
// told says a notice named it already.
func NoteFormer(g *localstore.GroupState, id [32]byte, told bool) {
	canon := session.PublicIdentity(id).Canonical()
	for i := range g.Former {
		if session.PublicIdentity(g.Former[i].Identity).Canonical() == canon {
			g.Former[i].Told = g.Former[i].Told || told
			return
		}
	}
	m := FindMember(g, session.PublicIdentity(id))
	if m == nil {
		return
	}
	g.Former = append(g.Former, localstore.FormerMember{Identity: id, Name: m.Name, Told: told})
	if len(g.Former) > maxFormer {
		g.Former = g.Former[len(g.Former)-maxFormer:]
	}
}

// FindFormer returns g's former member with identity id, or nil.
func FindFormer(g *localstore.GroupState, id session.PublicIdentity) *localstore.FormerMember {
	canon := id.Canonical()
	for i := range g.Former {
		if session.PublicIdentity(g.Former[i].Identity).Canonical() == canon {
			return &g.Former[i]
		}
	}
	return nil
}

// ForgetFormer drops id from g's former members (it is a member again).
func ForgetFormer(g *localstore.GroupState, id [32]byte) {
	canon := session.PublicIdentity(id).Canonical()
	out := g.Former[:0]
	for _, f := range g.Former {
		if session.PublicIdentity(f.Identity).Canonical() != canon {
			out = append(out, f)
		}
	}
	g.Former = out
}
