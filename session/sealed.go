package session

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"fmt"
	"io"
)

// Sealed sender hides who sent a message from the relay, which sees only the
// recipient's mailbox, the envelope's bucketed size and its timing. The
// recipient learns the sender's identity and authenticates it by a static
// X25519 agreement between the two identity keys. The design follows
// Signal's sealed sender v1 (two chained ECDH layers), without a
// server-issued sender certificate (docs/protocol.md section 3.2):
//
//	hdr      = 0x01 || IK_r (32) || E (32)
//	ck || k1 = HKDF-SHA-256(ikm = X25519(e, IK_r), salt = hdr, info = "Ferry sealed sender v1 ephemeral", 64)
//	S        = AES-256-GCM(k1, 0^12, IK_s (32), ad = hdr)                                   (48 bytes)
//	k2       = HKDF-SHA-256(ikm = X25519(IK_s, IK_r), salt = ck || S, info = "Ferry sealed sender v1 static", 32)
//	C        = AES-256-GCM(k2, 0^12, pad(content type (1) || inner), ad = hdr || IK_s)
//	envelope = 0x01 || E (32) || S (48) || C
//
// IK_s and IK_r are Ed25519 identity keys; the agreements use their X25519
// forms. E is a fresh X25519 key, so k1 and k2 are single-use and the zero
// nonces are safe.
const (
	sealedVersion    = 0x01
	sealedInfoEph    = "Ferry sealed sender v1 ephemeral"
	sealedInfoStatic = "Ferry sealed sender v1 static"
	sealedTagLen     = 16
	sealedSenderLen  = 32 + sealedTagLen
	sealedHeaderLen  = 1 + 32 + sealedSenderLen // version, E, S
	// sealedMinLen is the shortest envelope: the smallest bucket.
	sealedMinLen = sealedHeaderLen + minPadBucket + sealedTagLen
)

// SealedOverhead is the length an envelope adds to its padded content:
// version (1), E (32), S (48) and C's tag (16).
const SealedOverhead = 97

// The overhead is sealedHeaderLen + sealedTagLen (checked at compile time).
var _ [SealedOverhead - (sealedHeaderLen + sealedTagLen)]struct{}
var _ [(sealedHeaderLen + sealedTagLen) - SealedOverhead]struct{}

// Seal wraps inner, an opaque message (usually a ratchet message), for
// recipient so that only recipient can read it and learn that sender sent
// it. contentType is a byte the caller assigns; it travels inside the
// envelope. The envelope's length is SealedOverhead plus the bucket of
// len(inner)+1 (see docs/protocol.md section 3.1). Seal reads 32 bytes from
// rand.
func Seal(rand io.Reader, sender *Identity, recipient PublicIdentity, contentType byte, inner []byte) ([]byte, error) {
	return seal(rand, sender.Public(), sender.ECDH, recipient, contentType, inner)
}

// seal is Seal with the claimed sender identity and the static agreement
// apart, so that tests can try to spoof a sender.
func seal(rand io.Reader, spub PublicIdentity, static func(*ecdh.PublicKey) ([]byte, error), recipient PublicIdentity, contentType byte, inner []byte) ([]byte, error) {
	plen := paddedLen(1 + len(inner))
	if plen < 0 {
		return nil, fmt.Errorf("seal: %d bytes is too large", len(inner))
	}
	rx, err := recipient.X25519()
	if err != nil {
		return nil, fmt.Errorf("seal: recipient: %w", err)
	}
	var es [32]byte
	if _, err := io.ReadFull(rand, es[:]); err != nil {
		return nil, fmt.Errorf("seal: generate ephemeral: %w", err)
	}
	e, err := ecdh.X25519().NewPrivateKey(es[:])
	clear(es[:])
	if err != nil {
		return nil, fmt.Errorf("seal: ephemeral: %v", err)
	}
	dh1, err := e.ECDH(rx)
	if err != nil {
		return nil, fmt.Errorf("seal: ephemeral agreement: %w", ErrInvalidKey)
	}
	dh2, err := static(rx)
	if err != nil {
		return nil, fmt.Errorf("seal: static agreement: %w", err)
	}

	env := make([]byte, 0, SealedOverhead+plen)
	env = append(env, sealedVersion)
	env = append(env, e.PublicKey().Bytes()...)
	hdr := sealedHeader(recipient, env[1:33])

	ck, k1 := sealedEphemeralKeys(dh1, hdr)
	env = aesGCM(k1[:]).Seal(env, make([]byte, 12), spub[:], hdr)

	k2 := sealedStaticKey(dh2, &ck, env[33:sealedHeaderLen])
	msg := make([]byte, 0, 1+len(inner))
	msg = append(msg, contentType)
	pt, err := pad(append(msg, inner...))
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return aesGCM(k2[:]).Seal(env, make([]byte, 12), pt, append(hdr, spub[:]...)), nil
}

// Open unwraps an envelope addressed to recipient. It returns the sender's
// identity, authenticated by the static agreement, the content type and
// the inner message. Any failure wraps ErrDecrypt (or ErrMalformed for an
// envelope that cannot be parsed) and says nothing about which step failed.
func Open(recipient *Identity, envelope []byte) (sender PublicIdentity, contentType byte, inner []byte, err error) {
	env, err := parseSealed(envelope)
	if err != nil {
		return PublicIdentity{}, 0, nil, err
	}
	fail := func() (PublicIdentity, byte, []byte, error) {
		return PublicIdentity{}, 0, nil, fmt.Errorf("open sealed envelope: %w", ErrDecrypt)
	}
	epub, err := ecdh.X25519().NewPublicKey(env.eph[:])
	if err != nil {
		return fail()
	}
	dh1, err := recipient.ECDH(epub)
	if err != nil {
		return fail()
	}
	hdr := sealedHeader(recipient.Public(), env.eph[:])
	ck, k1 := sealedEphemeralKeys(dh1, hdr)
	sb, err := aesGCM(k1[:]).Open(nil, make([]byte, 12), env.sender[:], hdr)
	if err != nil {
		return fail()
	}
	sender = PublicIdentity(sb)
	sx, err := sender.X25519()
	if err != nil {
		return fail()
	}
	dh2, err := recipient.ECDH(sx)
	if err != nil {
		return fail()
	}
	k2 := sealedStaticKey(dh2, &ck, env.sender[:])
	pt, err := aesGCM(k2[:]).Open(nil, make([]byte, 12), env.content, append(hdr, sender[:]...))
	if err != nil {
		return fail()
	}
	pt, err = unpad(pt)
	if err != nil || len(pt) < 1 {
		return fail()
	}
	return sender, pt[0], pt[1:], nil
}

// sealedHeader returns hdr = version || IK_r || E, with room to append IK_s.
func sealedHeader(recipient PublicIdentity, eph []byte) []byte {
	hdr := make([]byte, 0, 1+32+32+32)
	hdr = append(hdr, sealedVersion)
	hdr = append(hdr, recipient[:]...)
	return append(hdr, eph...)
}

// sealedEphemeralKeys returns the chain key and the sender-identity key:
// HKDF-SHA256(salt = hdr, ikm = dh1, info = sealedInfoEph, 64 bytes).
func sealedEphemeralKeys(dh1, hdr []byte) (ck, k1 [keyLen]byte) {
	var okm [2 * keyLen]byte
	hkdfSHA256(okm[:], hdr, dh1, sealedInfoEph)
	copy(ck[:], okm[:keyLen])
	copy(k1[:], okm[keyLen:])
	clear(okm[:])
	return ck, k1
}

// sealedStaticKey returns the content key:
// HKDF-SHA256(salt = ck || s, ikm = dh2, info = sealedInfoStatic, 32 bytes).
func sealedStaticKey(dh2 []byte, ck *[keyLen]byte, s []byte) (k2 [keyLen]byte) {
	salt := append(append(make([]byte, 0, keyLen+len(s)), ck[:]...), s...)
	hkdfSHA256(k2[:], salt, dh2, sealedInfoStatic)
	return k2
}

// aesGCM returns AES-256-GCM under a 32-byte key (sealed sender and group
// messages).
func aesGCM(key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic("session: aes key length") // unreachable: keys are 32 bytes
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		panic("session: gcm") // unreachable
	}
	return a
}

// sealedEnvelope is a parsed envelope.
type sealedEnvelope struct {
	eph     [32]byte
	sender  [sealedSenderLen]byte
	content []byte // C: padded content and tag
}

// parseSealed checks an envelope's layout: version 1, and a content length
// that is a bucket plus the tag.
func parseSealed(b []byte) (*sealedEnvelope, error) {
	if len(b) < sealedMinLen {
		return nil, fmt.Errorf("parse sealed envelope: %d bytes: %w", len(b), ErrMalformed)
	}
	if b[0] != sealedVersion {
		return nil, fmt.Errorf("parse sealed envelope: version %d: %w", b[0], ErrMalformed)
	}
	if !isBucket(len(b) - SealedOverhead) {
		return nil, fmt.Errorf("parse sealed envelope: length %d is not a bucket: %w", len(b), ErrMalformed)
	}
	e := &sealedEnvelope{content: b[sealedHeaderLen:]}
	copy(e.eph[:], b[1:33])
	copy(e.sender[:], b[33:sealedHeaderLen])
	return e, nil
}

func (e *sealedEnvelope) marshal() []byte {
	b := make([]byte, 0, sealedHeaderLen+len(e.content))
	b = append(b, sealedVersion)
	b = append(b, e.eph[:]...)
	b = append(b, e.sender[:]...)
	return append(b, e.content...)
}
