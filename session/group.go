package session

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Group messages use sender keys (docs/protocol.md section 3.5): each member
// has a sender chain (an HMAC-SHA-256 chain, like the Double Ratchet's
// symmetric chains) and an Ed25519 signing key, both random and both sent
// to every other member in a SenderKeyDistribution over the pairwise
// sessions. A member encrypts a group message once with the next key of its
// chain and signs it; every recipient checks the signature before anything
// else. Removing a member rotates the remover's sender key to a new epoch,
// sent only to the remaining members, so the removed member cannot read
// what anyone sends after re-keying.
//
//	message seed_i = HMAC-SHA-256(chain key_i, 0x01)
//	chain key_i+1  = HMAC-SHA-256(chain key_i, 0x02)
//	message key_i  = HKDF-SHA-256(ikm = message seed_i, salt = 0^32, info = "Ferry group message v1", 32)
const (
	groupVersion      = 0x01
	groupStateVersion = 0x01
	groupSeedByte     = 0x01
	groupChainByte    = 0x02
	groupInfo         = "Ferry group message v1"

	// MaxGroupSkip is how far ahead of the next expected iteration a group
	// message may be: a receiver derives and stores at most this many
	// message keys for one message.
	MaxGroupSkip = 2000
	// MaxGroupSkipped bounds the message keys kept per member for messages
	// not yet received; the oldest are dropped first.
	MaxGroupSkipped = 2000
	// MaxGroupMembers bounds a group's size, not counting oneself.
	MaxGroupMembers = 1000

	groupIDLen = 16
)

// Layouts, version 1.
//
//	distribution = 0x01 || group id(16) || key id(4) || epoch(4) || iteration(4) || chain key(32) || signing key(32)   (93 bytes)
//	header       = 0x01 || group id(16) || epoch(4) || key id(4) || iteration(4)                                       (29 bytes)
//	message      = header || AES-256-GCM(message key, 0^12, plaintext, ad = header) || Ed25519 signature(64) over header || ciphertext
//
// All integers are big-endian.
const (
	distributionLen = 1 + groupIDLen + 4 + 4 + 4 + 32 + ed25519.PublicKeySize
	groupHeaderLen  = 1 + groupIDLen + 4 + 4 + 4
	groupMinMsgLen  = groupHeaderLen + 16 + ed25519.SignatureSize
)

// ErrNoSenderKey means a group message uses a sender key this member does
// not have (yet): the sender's distribution has not arrived, or the sender
// re-keyed. The client may ask the sender to resend its distribution.
var ErrNoSenderKey = errors.New("session: unknown group sender key")

// A GroupID names a group: 16 random bytes chosen by its creator.
type GroupID [16]byte

// senderChain is a member's sender key as a receiver keeps it.
type senderChain struct {
	keyID     uint32
	epoch     uint32
	iteration uint32   // iteration of chainKey: the next message expected
	chainKey  [32]byte // chain key at iteration
	sigPub    [ed25519.PublicKeySize]byte
	skipped   map[uint32][32]byte // message keys of missed iterations < iteration
}

// ownSenderKey is our own sender key.
type ownSenderKey struct {
	keyID     uint32
	epoch     uint32
	iteration uint32
	chainKey  [32]byte
	sigSeed   [ed25519.SeedSize]byte
	sigPriv   ed25519.PrivateKey // from sigSeed, not serialised
}

// A Group is one member's state of a group: the members and their sender
// keys, and its own sender key. It is not safe for concurrent use. A failed
// Decrypt leaves it unchanged.
type Group struct {
	id      GroupID
	self    PublicIdentity
	own     ownSenderKey
	members map[PublicIdentity]*senderChain // nil until the member's distribution arrives
}

// NewGroup creates the state of group id for self with the other members,
// and a fresh sender key (it reads 68 bytes from rand). Send
// Distribution() to every member over the pairwise sessions.
func NewGroup(rand io.Reader, id GroupID, self PublicIdentity, members []PublicIdentity) (*Group, error) {
	if len(members) > MaxGroupMembers {
		return nil, fmt.Errorf("create group: %d members exceed %d", len(members), MaxGroupMembers)
	}
	g := &Group{id: id, self: self, members: make(map[PublicIdentity]*senderChain, len(members))}
	for _, m := range members {
		if m == self {
			return nil, errors.New("create group: self listed as a member")
		}
		g.members[m] = nil
	}
	if err := g.newOwnKey(rand, 0); err != nil {
		return nil, fmt.Errorf("create group: %w", err)
	}
	return g, nil
}

func (g *Group) newOwnKey(rand io.Reader, epoch uint32) error {
	var b [4 + 32 + ed25519.SeedSize]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return fmt.Errorf("generate sender key: %w", err)
	}
	k := ownSenderKey{keyID: binary.BigEndian.Uint32(b[:4]), epoch: epoch}
	copy(k.chainKey[:], b[4:36])
	copy(k.sigSeed[:], b[36:])
	clear(b[:])
	k.sigPriv = ed25519.NewKeyFromSeed(k.sigSeed[:])
	g.own = k
	return nil
}

// ID returns the group's id.
func (g *Group) ID() GroupID { return g.id }

// Members returns the other members, sorted.
func (g *Group) Members() []PublicIdentity {
	ms := make([]PublicIdentity, 0, len(g.members))
	for m := range g.members {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b PublicIdentity) int { return bytes.Compare(a[:], b[:]) })
	return ms
}

// Epoch returns the epoch of our own sender key: 0 at creation, one more at
// each rotation.
func (g *Group) Epoch() uint32 { return g.own.epoch }

// Distribution returns our SenderKeyDistribution at the current iteration:
// its holder can decrypt what we send from now on, not before. It is secret
// and goes only over the pairwise sessions.
func (g *Group) Distribution() []byte {
	b := make([]byte, 0, distributionLen)
	b = append(b, groupVersion)
	b = append(b, g.id[:]...)
	b = binary.BigEndian.AppendUint32(b, g.own.keyID)
	b = binary.BigEndian.AppendUint32(b, g.own.epoch)
	b = binary.BigEndian.AppendUint32(b, g.own.iteration)
	b = append(b, g.own.chainKey[:]...)
	return append(b, g.own.sigPriv.Public().(ed25519.PublicKey)...)
}

// AddMember adds m to the group and returns our distribution to send to m.
// m can read our messages from now on only.
func (g *Group) AddMember(m PublicIdentity) ([]byte, error) {
	if m == g.self {
		return nil, errors.New("add group member: self")
	}
	if _, ok := g.members[m]; ok {
		return nil, errors.New("add group member: already a member")
	}
	if len(g.members) >= MaxGroupMembers {
		return nil, errors.New("add group member: group full")
	}
	g.members[m] = nil
	return g.Distribution(), nil
}

// RemoveMember removes m, forgets m's sender key and rotates our own
// (reading 68 bytes from rand). It returns the new distribution, which must
// be sent to every remaining member (Members) over the pairwise sessions.
// Every remaining member does the same when it learns of the removal, so
// that m can read nothing sent afterwards.
func (g *Group) RemoveMember(rand io.Reader, m PublicIdentity) ([]byte, error) {
	if _, ok := g.members[m]; !ok {
		return nil, errors.New("remove group member: not a member")
	}
	if g.own.epoch == ^uint32(0) {
		return nil, errors.New("remove group member: epochs exhausted")
	}
	if err := g.newOwnKey(rand, g.own.epoch+1); err != nil {
		return nil, fmt.Errorf("remove group member: %w", err)
	}
	delete(g.members, m)
	return g.Distribution(), nil
}

// Rotate replaces our sender key with a fresh one at the next epoch and
// returns its distribution for every member.
func (g *Group) Rotate(rand io.Reader) ([]byte, error) {
	if g.own.epoch == ^uint32(0) {
		return nil, errors.New("rotate sender key: epochs exhausted")
	}
	if err := g.newOwnKey(rand, g.own.epoch+1); err != nil {
		return nil, fmt.Errorf("rotate sender key: %w", err)
	}
	return g.Distribution(), nil
}

// distribution is a parsed SenderKeyDistribution.
type distribution struct {
	group     GroupID
	keyID     uint32
	epoch     uint32
	iteration uint32
	chainKey  [32]byte
	sigPub    [ed25519.PublicKeySize]byte
}

func parseDistribution(b []byte) (*distribution, error) {
	if len(b) != distributionLen || b[0] != groupVersion {
		return nil, fmt.Errorf("parse sender key distribution: %w", ErrMalformed)
	}
	d := &distribution{
		keyID:     binary.BigEndian.Uint32(b[17:21]),
		epoch:     binary.BigEndian.Uint32(b[21:25]),
		iteration: binary.BigEndian.Uint32(b[25:29]),
	}
	copy(d.group[:], b[1:17])
	copy(d.chainKey[:], b[29:61])
	copy(d.sigPub[:], b[61:93])
	return d, nil
}

func (d *distribution) marshal() []byte {
	b := make([]byte, 0, distributionLen)
	b = append(b, groupVersion)
	b = append(b, d.group[:]...)
	b = binary.BigEndian.AppendUint32(b, d.keyID)
	b = binary.BigEndian.AppendUint32(b, d.epoch)
	b = binary.BigEndian.AppendUint32(b, d.iteration)
	b = append(b, d.chainKey[:]...)
	return append(b, d.sigPub[:]...)
}

// ProcessDistribution installs the sender key in dist, received from member
// from over the pairwise session (which authenticates from). A key of a
// later epoch replaces the member's previous one; the same key again is
// ignored; an older epoch is rejected. Key ids need not be unique across
// members: messages are looked up by their authenticated sender.
func (g *Group) ProcessDistribution(from PublicIdentity, dist []byte) error {
	d, err := parseDistribution(dist)
	if err != nil {
		return err
	}
	if d.group != g.id {
		return errors.New("process sender key distribution: another group")
	}
	cur, ok := g.members[from]
	if !ok {
		return errors.New("process sender key distribution: sender is not a member")
	}
	if cur != nil {
		switch {
		case d.epoch == cur.epoch && d.keyID == cur.keyID && d.sigPub == cur.sigPub:
			return nil // a resend of the key we have
		case d.epoch <= cur.epoch:
			return fmt.Errorf("process sender key distribution: epoch %d not after %d", d.epoch, cur.epoch)
		}
	}
	g.members[from] = &senderChain{
		keyID: d.keyID, epoch: d.epoch, iteration: d.iteration,
		chainKey: d.chainKey, sigPub: d.sigPub, skipped: map[uint32][32]byte{},
	}
	return nil
}

// groupStep returns the message key at chain key ck and the next chain key.
func groupStep(ck *[32]byte) (mk, next [32]byte) {
	seed := hmacSHA256(ck[:], []byte{groupSeedByte})
	next = hmacSHA256(ck[:], []byte{groupChainByte})
	hkdfSHA256(mk[:], nil, seed[:], groupInfo)
	clear(seed[:])
	return mk, next
}

func (h *groupHeader) append(b []byte) []byte {
	b = append(b, groupVersion)
	b = append(b, h.group[:]...)
	b = binary.BigEndian.AppendUint32(b, h.epoch)
	b = binary.BigEndian.AppendUint32(b, h.keyID)
	return binary.BigEndian.AppendUint32(b, h.iteration)
}

// Encrypt encrypts and signs plaintext for every member holding our current
// distribution.
func (g *Group) Encrypt(plaintext []byte) ([]byte, error) {
	k := &g.own
	if k.iteration == ^uint32(0) {
		return nil, errors.New("encrypt group message: chain exhausted, rotate")
	}
	mk, next := groupStep(&k.chainKey)
	msg := make([]byte, 0, groupHeaderLen+len(plaintext)+16+ed25519.SignatureSize)
	hdr := groupHeader{group: g.id, epoch: k.epoch, keyID: k.keyID, iteration: k.iteration}
	msg = hdr.append(msg)
	msg = aesGCM(mk[:]).Seal(msg, make([]byte, 12), plaintext, msg[:groupHeaderLen])
	msg = append(msg, ed25519.Sign(k.sigPriv, msg)...)
	clear(mk[:])
	k.chainKey = next
	k.iteration++
	return msg, nil
}

// groupHeader is a parsed group message header.
type groupHeader struct {
	group                   GroupID
	epoch, keyID, iteration uint32
}

func parseGroupMessage(b []byte) (*groupHeader, error) {
	if len(b) < groupMinMsgLen || b[0] != groupVersion {
		return nil, fmt.Errorf("parse group message: %w", ErrMalformed)
	}
	h := &groupHeader{
		epoch:     binary.BigEndian.Uint32(b[17:21]),
		keyID:     binary.BigEndian.Uint32(b[21:25]),
		iteration: binary.BigEndian.Uint32(b[25:29]),
	}
	copy(h.group[:], b[1:17])
	return h, nil
}

// Decrypt checks the signature on a group message from member from,
// decrypts it and returns the plaintext. from is the sender's identity as
// authenticated by the channel the message came in (Open for a
// sealed-sender envelope, or the pairwise session), so that no member can
// have another member's messages attributed to it. Messages may arrive out
// of order within MaxGroupSkip; a replayed or too old message is rejected.
// On any error the group state is unchanged.
func (g *Group) Decrypt(from PublicIdentity, msg []byte) ([]byte, error) {
	h, err := parseGroupMessage(msg)
	if err != nil {
		return nil, err
	}
	if h.group != g.id {
		return nil, errors.New("decrypt group message: another group")
	}
	c, ok := g.members[from]
	if !ok {
		return nil, errors.New("decrypt group message: sender is not a member")
	}
	if c == nil || c.keyID != h.keyID || c.epoch != h.epoch {
		return nil, fmt.Errorf("decrypt group message: key %08x epoch %d: %w", h.keyID, h.epoch, ErrNoSenderKey)
	}
	fail := func(why string) ([]byte, error) {
		return nil, fmt.Errorf("decrypt group message: %s: %w", why, ErrDecrypt)
	}
	body := msg[:len(msg)-ed25519.SignatureSize]
	if !ed25519.Verify(c.sigPub[:], body, msg[len(body):]) {
		return fail("bad signature")
	}

	var mk, ck [32]byte
	var newSkipped [][32]byte // message keys of c.iteration .. h.iteration-1
	fromSkipped := false
	switch {
	case h.iteration < c.iteration:
		k, ok := c.skipped[h.iteration]
		if !ok {
			return fail("replayed or too old")
		}
		mk, fromSkipped = k, true
	case h.iteration-c.iteration > MaxGroupSkip:
		return fail("too far ahead")
	case h.iteration == ^uint32(0):
		return fail("iteration out of range")
	default:
		ck = c.chainKey
		for i := c.iteration; i < h.iteration; i++ {
			var k [32]byte
			k, ck = groupStep(&ck)
			newSkipped = append(newSkipped, k)
		}
		mk, ck = groupStep(&ck)
	}
	pt, err := aesGCM(mk[:]).Open(nil, make([]byte, 12), body[groupHeaderLen:], body[:groupHeaderLen])
	if err != nil {
		return fail("bad ciphertext")
	}

	// Commit.
	if fromSkipped {
		delete(c.skipped, h.iteration)
		return pt, nil
	}
	for i, k := range newSkipped {
		c.skipped[c.iteration+uint32(i)] = k
	}
	c.chainKey = ck
	c.iteration = h.iteration + 1
	if over := len(c.skipped) - MaxGroupSkipped; over > 0 {
		its := make([]uint32, 0, len(c.skipped))
		for it := range c.skipped {
			its = append(its, it)
		}
		slices.Sort(its)
		for _, it := range its[:over] {
			delete(c.skipped, it)
		}
	}
	return pt, nil
}

// Group state encoding, version 1 (for the client's store; secret):
//
//	0x01 || group id(16) || self(32)
//	own:     key id(4) || epoch(4) || iteration(4) || chain key(32) || signing seed(32)
//	count(2), then per member, in ascending order of identity:
//	         identity(32) || has key(1) = 0x00 | 0x01
//	         [key id(4) || epoch(4) || iteration(4) || chain key(32) || signing key(32) ||
//	          skipped count(2) || skipped count × (iteration(4) || message key(32)), ascending, each < iteration]
const (
	groupStateFixedLen = 1 + groupIDLen + 32 + 4 + 4 + 4 + 32 + 32 + 2
	groupMemberKeyLen  = 4 + 4 + 4 + 32 + 32 + 2
	groupSkippedLen    = 4 + 32
)

// MarshalBinary encodes the group state. The result is secret.
func (g *Group) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, groupStateFixedLen+len(g.members)*(33+groupMemberKeyLen))
	b = append(b, groupStateVersion)
	b = append(b, g.id[:]...)
	b = append(b, g.self[:]...)
	b = binary.BigEndian.AppendUint32(b, g.own.keyID)
	b = binary.BigEndian.AppendUint32(b, g.own.epoch)
	b = binary.BigEndian.AppendUint32(b, g.own.iteration)
	b = append(b, g.own.chainKey[:]...)
	b = append(b, g.own.sigSeed[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(g.members)))
	for _, m := range g.Members() {
		b = append(b, m[:]...)
		c := g.members[m]
		if c == nil {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = binary.BigEndian.AppendUint32(b, c.keyID)
		b = binary.BigEndian.AppendUint32(b, c.epoch)
		b = binary.BigEndian.AppendUint32(b, c.iteration)
		b = append(b, c.chainKey[:]...)
		b = append(b, c.sigPub[:]...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(c.skipped)))
		its := make([]uint32, 0, len(c.skipped))
		for it := range c.skipped {
			its = append(its, it)
		}
		slices.Sort(its)
		for _, it := range its {
			k := c.skipped[it]
			b = binary.BigEndian.AppendUint32(b, it)
			b = append(b, k[:]...)
		}
	}
	return b, nil
}

// UnmarshalBinary decodes a group state encoded by MarshalBinary. It
// accepts only the canonical encoding.
func (g *Group) UnmarshalBinary(b []byte) error {
	bad := func(what string) error {
		return fmt.Errorf("unmarshal group state: %s: %w", what, ErrMalformed)
	}
	if len(b) < groupStateFixedLen || b[0] != groupStateVersion {
		return bad("header")
	}
	n := Group{}
	copy(n.id[:], b[1:17])
	copy(n.self[:], b[17:49])
	n.own.keyID = binary.BigEndian.Uint32(b[49:53])
	n.own.epoch = binary.BigEndian.Uint32(b[53:57])
	n.own.iteration = binary.BigEndian.Uint32(b[57:61])
	copy(n.own.chainKey[:], b[61:93])
	copy(n.own.sigSeed[:], b[93:125])
	n.own.sigPriv = ed25519.NewKeyFromSeed(n.own.sigSeed[:])
	count := int(binary.BigEndian.Uint16(b[125:127]))
	if count > MaxGroupMembers {
		return bad("too many members")
	}
	n.members = make(map[PublicIdentity]*senderChain, count)
	rest := b[groupStateFixedLen:]
	var prev []byte
	for range count {
		if len(rest) < 33 {
			return bad("truncated member")
		}
		m := PublicIdentity(rest[:32])
		if prev != nil && bytes.Compare(prev, rest[:32]) >= 0 {
			return bad("members not in order")
		}
		if m == n.self {
			return bad("self listed as a member")
		}
		prev = rest[:32]
		has := rest[32]
		rest = rest[33:]
		if has == 0 {
			n.members[m] = nil
			continue
		}
		if has != 1 || len(rest) < groupMemberKeyLen {
			return bad("member key")
		}
		c := &senderChain{
			keyID:     binary.BigEndian.Uint32(rest[0:4]),
			epoch:     binary.BigEndian.Uint32(rest[4:8]),
			iteration: binary.BigEndian.Uint32(rest[8:12]),
		}
		copy(c.chainKey[:], rest[12:44])
		copy(c.sigPub[:], rest[44:76])
		ns := int(binary.BigEndian.Uint16(rest[76:78]))
		rest = rest[groupMemberKeyLen:]
		if ns > MaxGroupSkipped || len(rest) < ns*groupSkippedLen {
			return bad("skipped keys")
		}
		c.skipped = make(map[uint32][32]byte, ns)
		var prevIt uint32
		for i := range ns {
			it := binary.BigEndian.Uint32(rest[:4])
			if it >= c.iteration || (i > 0 && it <= prevIt) {
				return bad("skipped key order")
			}
			prevIt = it
			c.skipped[it] = [32]byte(rest[4:36])
			rest = rest[groupSkippedLen:]
		}
		n.members[m] = c
	}
	if len(rest) != 0 {
		return bad("trailing bytes")
	}
	*g = n
	return nil
}
