package session

import (
	"bytes"
	"crypto/ecdh"
	"crypto/mlkem"
	"encoding/binary"
	"fmt"
	"io"
)

// Initial message layout (docs/protocol.md section 2.5):
//
//	initial = 0x02 || IK_A(32) || EK_A(32) || signed prekey id(4)
//	          || flags(1) || [one-time prekey id(4), if flags&1]
//	          || KEM prekey id(4) || KEM ciphertext(1088) || ratchet message
//
// flags bit 0: a one-time X25519 prekey was used; other bits are zero.
const (
	flagOneTime         = 0x01
	initialFixedLen     = 1 + 32 + 32 + 4 + 1 + 4 + kemCTLen
	initialMaxPrefixLen = initialFixedLen + 4
)

// initialMessage is a parsed initial message.
type initialMessage struct {
	identity   PublicIdentity
	ephemeral  [keyLen]byte
	signedID   uint32
	hasOneTime bool
	oneTimeID  uint32
	kemID      uint32
	ciphertext []byte
	ratchet    []byte // the ratchet message, starting with its type byte
}

func parseInitialMessage(b []byte) (*initialMessage, error) {
	if len(b) < initialFixedLen || b[0] != msgInitial {
		return nil, fmt.Errorf("parse initial message: %w", ErrMalformed)
	}
	m := &initialMessage{identity: PublicIdentity(b[1:33]), ephemeral: [keyLen]byte(b[33:65])}
	m.signedID = binary.BigEndian.Uint32(b[65:69])
	flags := b[69]
	rest := b[70:]
	if flags&^flagOneTime != 0 {
		return nil, fmt.Errorf("parse initial message: flags: %w", ErrMalformed)
	}
	if flags&flagOneTime != 0 {
		m.hasOneTime = true
		m.oneTimeID = binary.BigEndian.Uint32(rest[:4])
		rest = rest[4:]
	}
	if len(rest) < 4+kemCTLen+ratchetOverhead {
		return nil, fmt.Errorf("parse initial message: %w", ErrMalformed)
	}
	m.kemID = binary.BigEndian.Uint32(rest[:4])
	m.ciphertext = rest[4 : 4+kemCTLen]
	m.ratchet = rest[4+kemCTLen:]
	if m.ratchet[0] != msgRatchet {
		return nil, fmt.Errorf("parse initial message: %w", ErrMalformed)
	}
	return m, nil
}

// appendPrefix appends the initial-message prefix (everything before the
// ratchet message).
func (m *initialMessage) appendPrefix(b []byte) []byte {
	b = append(b, msgInitial)
	b = append(b, m.identity[:]...)
	b = append(b, m.ephemeral[:]...)
	b = binary.BigEndian.AppendUint32(b, m.signedID)
	if m.hasOneTime {
		b = append(b, flagOneTime)
		b = binary.BigEndian.AppendUint32(b, m.oneTimeID)
	} else {
		b = append(b, 0)
	}
	b = binary.BigEndian.AppendUint32(b, m.kemID)
	return append(b, m.ciphertext...)
}

// IsInitialMessage reports whether msg is an initial message, which only
// Respond (or, for a retransmission, the responder's Session) can decrypt.
func IsInitialMessage(msg []byte) bool { return len(msg) > 0 && msg[0] == msgInitial }

// encapsulate is ML-KEM-768 encapsulation to ek. crypto/mlkem draws its own
// randomness and has no io.Reader parameter, so rand is unused here: this is
// the one draw in the package that does not come from the injected reader.
// Tests replace it with derandomized encapsulation (crypto/mlkem/mlkemtest)
// that reads 32 bytes from rand, which makes the vectors reproducible
// (docs/protocol.md section 2.9).
var encapsulate = func(ek *mlkem.EncapsulationKey768, rand io.Reader) (sharedKey, ciphertext []byte, err error) {
	sharedKey, ciphertext = ek.Encapsulate()
	return sharedKey, ciphertext, nil
}

// pqxdhKDF derives SK, HKa and NHKb (section 2.5):
//
//	HKDF-SHA256(salt = 32 zero bytes, ikm = 0xFF*32 || DH1 || DH2 || DH3 [|| DH4] || SS,
//	            info = "Ferry_PQXDH_X25519_SHA-256_ML-KEM-768", 96 bytes)
//
// split as SK [0:32] (exactly PQXDH's 32-byte SK, since HKDF output is a
// prefix of a longer output), HKa [32:64] and NHKb [64:96].
func pqxdhKDF(dhs [][]byte, ss []byte) (sk, hka, nhkb [keyLen]byte) {
	ikm := make([]byte, 0, 32*6+len(ss))
	ikm = append(ikm, bytes.Repeat([]byte{0xff}, 32)...)
	for _, dh := range dhs {
		ikm = append(ikm, dh...)
	}
	ikm = append(ikm, ss...)
	var out [3 * keyLen]byte
	hkdfSHA256(out[:], nil, ikm, labelPQXDH)
	clear(ikm)
	copy(sk[:], out[0:32])
	copy(hka[:], out[32:64])
	copy(nhkb[:], out[64:96])
	clear(out[:])
	return
}

// associatedData returns AD = Encode(IK_A) || Encode(IK_B), where Encode is
// 0x05 || the X25519 form of the identity key, from the X25519 forms.
func associatedData(a, b *[32]byte) [adLen]byte {
	var ad [adLen]byte
	ad[0] = 0x05
	copy(ad[1:33], a[:])
	ad[33] = 0x05
	copy(ad[34:], b[:])
	return ad
}

// Initiate runs the initiator's side of PQXDH against b, after verifying
// every signature in it, and returns the new session. Its first Encrypt
// produces the initial message; until the session decrypts a reply, every
// Encrypt repeats the PQXDH prefix so whichever message arrives first sets
// up the responder. rand supplies the ephemeral key and the session's
// ratchet keys (the session keeps it as Session.Rand).
func Initiate(rand io.Reader, self *Identity, b *Bundle) (*Session, error) {
	uB, err := b.verify()
	if err != nil {
		return nil, fmt.Errorf("initiate: %w", err)
	}
	ikB, err := ecdh.X25519().NewPublicKey(uB[:])
	if err != nil {
		return nil, fmt.Errorf("initiate: %w", ErrInvalidKey)
	}
	ek, err := mlkem.NewEncapsulationKey768(b.KEMPrekey.Public[:])
	if err != nil {
		return nil, fmt.Errorf("initiate: kem prekey: %w", ErrInvalidKey)
	}
	eph, err := generateX25519(rand)
	if err != nil {
		return nil, fmt.Errorf("initiate: %w", err)
	}
	dh1, err := x25519FromIdentity(self, b.SignedPrekey.Public[:])
	if err != nil {
		return nil, fmt.Errorf("initiate: signed prekey: %w", err)
	}
	dh2, err := eph.ECDH(ikB)
	if err != nil {
		return nil, fmt.Errorf("initiate: identity: %w", ErrInvalidKey)
	}
	dh3, err := x25519(eph, b.SignedPrekey.Public[:])
	if err != nil {
		return nil, fmt.Errorf("initiate: signed prekey: %w", err)
	}
	dhs := [][]byte{dh1, dh2, dh3}
	im := initialMessage{identity: self.Public(), signedID: b.SignedPrekey.ID, kemID: b.KEMPrekey.ID}
	copy(im.ephemeral[:], eph.PublicKey().Bytes())
	if o := b.OneTimePrekey; o != nil {
		dh4, err := x25519(eph, o.Public[:])
		if err != nil {
			return nil, fmt.Errorf("initiate: one-time prekey: %w", err)
		}
		dhs = append(dhs, dh4)
		im.hasOneTime, im.oneTimeID = true, o.ID
	}
	ss, ct, err := encapsulate(ek, rand)
	if err != nil {
		return nil, fmt.Errorf("initiate: kem: %w", err)
	}
	im.ciphertext = ct
	sk, hka, nhkb := pqxdhKDF(dhs, ss)
	clear(ss)
	for _, dh := range dhs {
		clear(dh)
	}

	s := &Session{Rand: rand}
	st := &s.st
	st.initiator = true
	st.setIdentities(self.Public(), b.Identity, &self.xpub, &uB)
	st.baseKey = im.ephemeral
	if err := st.initAlice(rand, &sk, &hka, &nhkb, b.SignedPrekey.Public[:]); err != nil {
		return nil, fmt.Errorf("initiate: %w", err)
	}
	st.pending = im.appendPrefix(make([]byte, 0, initialMaxPrefixLen))
	return s, nil
}

func x25519FromIdentity(id *Identity, pub []byte) ([]byte, error) {
	p, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, ErrInvalidKey
	}
	return id.ECDH(p)
}

// UsedPrekeys says which prekeys Respond used, so the owner can delete the
// one-time ones from its store and from the relay. Respond has already
// deleted them from the PrekeySet.
type UsedPrekeys struct {
	Signed     uint32 // the signed prekey (not deleted)
	OneTime    uint32 // the one-time X25519 prekey, if HasOneTime
	HasOneTime bool
	KEM        uint32 // the ML-KEM prekey
	LastResort bool   // KEM is the last-resort prekey (not deleted)
}

// Respond runs the responder's side of PQXDH for an initial message and
// decrypts the ratchet message in it with ad. On success it deletes the
// one-time prekeys it used from ps (the caller saves ps and tells the relay)
// and returns the new session, the plaintext and the prekeys used. The
// last-resort ML-KEM prekey is accepted any number of times. On failure ps
// is unchanged. rand supplies the session's ratchet keys (the session keeps
// it as Session.Rand).
//
// A replayed initial message whose one-time prekeys are gone fails; one that
// used only the signed and last-resort prekeys sets up a duplicate session,
// which a caller detects by the sender and the message (as Signal does).
func Respond(rand io.Reader, self *Identity, ps *PrekeySet, msg, ad []byte) (*Session, []byte, UsedPrekeys, error) {
	var used UsedPrekeys
	im, err := parseInitialMessage(msg)
	if err != nil {
		return nil, nil, used, fmt.Errorf("respond: %w", err)
	}
	uA, err := im.identity.montgomery()
	if err != nil {
		return nil, nil, used, fmt.Errorf("respond: initiator identity: %w", err)
	}
	ikA, err := ecdh.X25519().NewPublicKey(uA[:])
	if err != nil {
		return nil, nil, used, fmt.Errorf("respond: initiator identity: %w", ErrInvalidKey)
	}
	spk := ps.findSigned(im.signedID)
	if spk == nil {
		return nil, nil, used, fmt.Errorf("respond: signed prekey %d: %w", im.signedID, ErrUnknownPrekey)
	}
	used.Signed = im.signedID
	otIndex := -1
	if im.hasOneTime {
		if otIndex = findX25519(ps.oneTime, im.oneTimeID); otIndex < 0 {
			return nil, nil, used, fmt.Errorf("respond: one-time prekey %d: %w", im.oneTimeID, ErrUnknownPrekey)
		}
		used.OneTime, used.HasOneTime = im.oneTimeID, true
	}
	var dk *mlkem.DecapsulationKey768
	kemIndex := findKEM(ps.kem, im.kemID)
	lrIndex := findKEM(ps.lastResort, im.kemID)
	switch {
	case kemIndex >= 0:
		dk = ps.kem[kemIndex].decapsulationKey()
	case lrIndex >= 0:
		dk = ps.lastResort[lrIndex].decapsulationKey()
		used.LastResort = true
	default:
		return nil, nil, used, fmt.Errorf("respond: kem prekey %d: %w", im.kemID, ErrUnknownPrekey)
	}
	used.KEM = im.kemID

	spkKey, err := spk.privateKey()
	if err != nil {
		return nil, nil, used, fmt.Errorf("respond: %w", ErrInvalidKey)
	}
	dh1, err := spkKey.ECDH(ikA)
	if err != nil {
		return nil, nil, used, fmt.Errorf("respond: %w", ErrInvalidKey)
	}
	dh2, err := x25519FromIdentity(self, im.ephemeral[:])
	if err != nil {
		return nil, nil, used, fmt.Errorf("respond: ephemeral: %w", err)
	}
	dh3, err := x25519(spkKey, im.ephemeral[:])
	if err != nil {
		return nil, nil, used, fmt.Errorf("respond: ephemeral: %w", err)
	}
	dhs := [][]byte{dh1, dh2, dh3}
	if otIndex >= 0 {
		otKey, err := ps.oneTime[otIndex].privateKey()
		if err != nil {
			return nil, nil, used, fmt.Errorf("respond: %w", ErrInvalidKey)
		}
		dh4, err := x25519(otKey, im.ephemeral[:])
		if err != nil {
			return nil, nil, used, fmt.Errorf("respond: ephemeral: %w", err)
		}
		dhs = append(dhs, dh4)
	}
	ss, err := dk.Decapsulate(im.ciphertext)
	if err != nil {
		return nil, nil, used, fmt.Errorf("respond: kem: %w", ErrMalformed)
	}
	sk, hka, nhkb := pqxdhKDF(dhs, ss)
	clear(ss)
	for _, dh := range dhs {
		clear(dh)
	}

	s := &Session{Rand: rand}
	st := &s.st
	st.setIdentities(self.Public(), im.identity, &self.xpub, &uA)
	st.baseKey = im.ephemeral
	st.initBob(&sk, &hka, &nhkb, spkKey)
	if len(im.ratchet) < ratchetOverhead {
		return nil, nil, used, fmt.Errorf("respond: %w", ErrDecrypt)
	}
	pt, err := s.decrypt(msg[:len(msg)-len(im.ratchet)], im.ratchet, ad)
	if err != nil {
		return nil, nil, used, fmt.Errorf("respond: %w", err)
	}
	// Commit: consume the one-time prekeys.
	if otIndex >= 0 {
		ps.oneTime = append(ps.oneTime[:otIndex], ps.oneTime[otIndex+1:]...)
	}
	if kemIndex >= 0 {
		ps.kem = append(ps.kem[:kemIndex], ps.kem[kemIndex+1:]...)
	}
	return s, pt, used, nil
}
