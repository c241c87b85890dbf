package content

import (
	"encoding/binary"
	"fmt"
	"slices"
	"unicode/utf8"
)

// Group operations (GroupControl.Op).
const (
	GroupWelcome = 1 // to a new member, over a pairwise channel: the whole group
	GroupAdd     = 2 // in the group: members added
	GroupRemove  = 3 // in the group: members removed
	GroupRename  = 4 // in the group: a new name
	GroupAdmins  = 5 // in the group: the admins now
	GroupLeave   = 6 // in the group: the sender leaves
	GroupRekey   = 7 // to each remaining member, over a pairwise channel: a new envelope key
)

// Group limits.
const (
	MaxGroupMembers = 1001 // members, the sender included
	MaxGroupName    = 64   // bytes of a group's or member's name
	DistributionLen = 93   // a sender key distribution (session 3.5)
	maxRelayLink    = 4096
)

// Member is one member of a group as its admins describe it: who it is,
// where its messages go, and its name.
//
//	member = identity(32) || mailbox(16) || token(32) || relay index(2, BE) || nameLen(1) || name
type Member struct {
	Identity [32]byte
	Mailbox  [16]byte
	Token    [32]byte
	Relay    string // the member's relay link (sent once per distinct link)
	Name     string
}

// GroupControl manages a group (kind 6): its membership, name, admins and
// envelope key. docs/client.md section 10 says who may send which and over
// what; this is only the encoding:
//
//	body    = op(1) || group id(16) || op body
//	welcome = epoch(4) || envelope key(32) || name || distribution(93) || admins || members
//	add     = members               remove = identities        rename = name
//	admins  = identities            leave  = (nothing)         rekey  = epoch(4) || envelope key(32) || identities (the members gone)
//	name       = len(1, 1..64) || UTF-8
//	identities = count(2, BE) || identity(32) * count
//	members    = relays: count(2) || (len(2) || link) * count, then count(2) || member * count
//
// Integers are big-endian. Lists have no repeated identity; counts are at
// most MaxGroupMembers.
type GroupControl struct {
	Op    byte
	Group [16]byte

	Epoch        uint32   // welcome, rekey
	EnvelopeKey  [32]byte // welcome, rekey
	Name         string   // welcome, rename
	Distribution []byte   // welcome: the sender's sender key
	Admins       [][32]byte
	Members      []Member   // welcome, add
	Identities   [][32]byte // remove; admins uses Admins
}

// Kind returns KindGroupControl.
func (*GroupControl) Kind() Kind { return KindGroupControl }

// ValidGroupName reports whether s may name a group or a member in one.
func ValidGroupName(s string) bool {
	if len(s) == 0 || len(s) > MaxGroupName || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// AppendBody appends the group control body.
func (g *GroupControl) AppendBody(b []byte) ([]byte, error) {
	bad := fmt.Errorf("encode group control: %w", ErrMalformed)
	b = append(b, g.Op)
	b = append(b, g.Group[:]...)
	var err error
	switch g.Op {
	case GroupWelcome:
		if len(g.Distribution) != DistributionLen || !ValidGroupName(g.Name) {
			return nil, bad
		}
		b = binary.BigEndian.AppendUint32(b, g.Epoch)
		b = append(b, g.EnvelopeKey[:]...)
		b = appendName(b, g.Name)
		b = append(b, g.Distribution...)
		if b, err = appendIdentities(b, g.Admins); err == nil {
			b, err = appendMembers(b, g.Members)
		}
	case GroupAdd:
		b, err = appendMembers(b, g.Members)
	case GroupRemove:
		b, err = appendIdentities(b, g.Identities)
	case GroupRename:
		if !ValidGroupName(g.Name) {
			return nil, bad
		}
		b = appendName(b, g.Name)
	case GroupAdmins:
		b, err = appendIdentities(b, g.Admins)
	case GroupLeave:
	case GroupRekey:
		b = binary.BigEndian.AppendUint32(b, g.Epoch)
		b = append(b, g.EnvelopeKey[:]...)
		b, err = appendIdentities(b, g.Identities)
	default:
		return nil, bad
	}
	if err != nil {
		return nil, bad
	}
	return b, nil
}

func appendName(b []byte, s string) []byte { return append(append(b, byte(len(s))), s...) }

func appendIdentities(b []byte, ids [][32]byte) ([]byte, error) {
	if len(ids) > MaxGroupMembers || hasDuplicate(ids) {
		return nil, ErrMalformed
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(ids)))
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	return b, nil
}

func hasDuplicate(ids [][32]byte) bool {
	seen := make(map[[32]byte]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			return true
		}
		seen[id] = true
	}
	return false
}

func appendMembers(b []byte, ms []Member) ([]byte, error) {
	if len(ms) > MaxGroupMembers {
		return nil, ErrMalformed
	}
	var relays []string
	ids := make([][32]byte, len(ms))
	for i, m := range ms {
		ids[i] = m.Identity
		if !ValidGroupName(m.Name) || len(m.Relay) == 0 || len(m.Relay) > maxRelayLink {
			return nil, ErrMalformed
		}
		if !slices.Contains(relays, m.Relay) {
			relays = append(relays, m.Relay)
		}
	}
	if hasDuplicate(ids) {
		return nil, ErrMalformed
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(relays)))
	for _, r := range relays {
		b = binary.BigEndian.AppendUint16(b, uint16(len(r)))
		b = append(b, r...)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(ms)))
	for _, m := range ms {
		b = append(b, m.Identity[:]...)
		b = append(b, m.Mailbox[:]...)
		b = append(b, m.Token[:]...)
		b = binary.BigEndian.AppendUint16(b, uint16(slices.Index(relays, m.Relay)))
		b = appendName(b, m.Name)
	}
	return b, nil
}

func parseGroupControl(b []byte) (Body, error) {
	r := cursor{b: b}
	g := &GroupControl{Op: r.u8()}
	copy(g.Group[:], r.next(16))
	switch g.Op {
	case GroupWelcome:
		g.Epoch = r.u32()
		copy(g.EnvelopeKey[:], r.next(32))
		g.Name = r.name()
		g.Distribution = append([]byte(nil), r.next(DistributionLen)...)
		g.Admins = r.identities()
		g.Members = r.members()
	case GroupAdd:
		g.Members = r.members()
	case GroupRemove:
		g.Identities = r.identities()
	case GroupRename:
		g.Name = r.name()
	case GroupAdmins:
		g.Admins = r.identities()
	case GroupLeave:
	case GroupRekey:
		g.Epoch = r.u32()
		copy(g.EnvelopeKey[:], r.next(32))
		g.Identities = r.identities()
	default:
		r.bad = true
	}
	if r.bad || len(r.b) != 0 {
		return nil, fmt.Errorf("group control: %w", ErrMalformed)
	}
	// Re-encoding checks what the parse did not: names, duplicates, and
	// that the relay list has no unused or repeated link.
	again, err := g.AppendBody(nil)
	if err != nil || string(again) != string(b) {
		return nil, fmt.Errorf("group control: %w", ErrMalformed)
	}
	return g, nil
}

func (r *cursor) name() string { return string(r.next(int(r.u8()))) }

func (r *cursor) identities() [][32]byte {
	n := int(r.u16())
	if n > MaxGroupMembers || n*32 > len(r.b) {
		r.bad = true
		return nil
	}
	ids := make([][32]byte, n)
	for i := range ids {
		copy(ids[i][:], r.next(32))
	}
	return ids
}

func (r *cursor) members() []Member {
	nr := int(r.u16())
	if nr > MaxGroupMembers || nr*2 > len(r.b) {
		r.bad = true
		return nil
	}
	relays := make([]string, nr)
	for i := range relays {
		relays[i] = string(r.next(int(r.u16())))
	}
	n := int(r.u16())
	if n > MaxGroupMembers || n*83 > len(r.b) {
		r.bad = true
		return nil
	}
	ms := make([]Member, n)
	for i := range ms {
		m := &ms[i]
		copy(m.Identity[:], r.next(32))
		copy(m.Mailbox[:], r.next(16))
		copy(m.Token[:], r.next(32))
		ri := int(r.u16())
		if ri >= len(relays) {
			r.bad = true
			return nil
		}
		m.Relay = relays[ri]
		m.Name = r.name()
	}
	return ms
}
