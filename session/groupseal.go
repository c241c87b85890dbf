package session

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// Group envelopes (docs/protocol.md section 3.8) carry one group message
// to every member at once: the relay stores the same bytes in each
// member's mailbox (a fan-out), so nothing in them may be per recipient.
// They are sealed under the group's envelope key, which only the current
// members hold, padded like sealed-sender envelopes, and marked with a
// hint that lets a member find which of its groups' keys opens one without
// trying them all, and tells the relay nothing (it is different for every
// envelope):
//
//	seal key  = HKDF(salt = "", ikm = envelope key, info = "Ferry group envelope v1", 32)
//	hint key  = HKDF(salt = "", ikm = envelope key, info = "Ferry group hint v1", 32)
//	hint      = HMAC-SHA-256(hint key, nonce)[0:8]
//	envelope  = 0x02 || nonce(24) || hint(8) || XChaCha20-Poly1305(seal key, nonce, pad(inner), ad = 0x02 || nonce || hint)
//
// The nonce is 24 random bytes (XChaCha20's nonce is large enough to be
// drawn at random for every envelope under one key).
const (
	groupEnvelopeVersion = 0x02
	groupNonceLen        = chacha20poly1305.NonceSizeX
	groupHintLen         = 8
	groupEnvHeaderLen    = 1 + groupNonceLen + groupHintLen
	// GroupEnvelopeOverhead is what a group envelope adds to its padded
	// inner bytes.
	GroupEnvelopeOverhead = groupEnvHeaderLen + chacha20poly1305.Overhead
)

// GroupKeys are the keys derived from a group's envelope key.
type GroupKeys struct {
	seal, hint [32]byte
}

// NewGroupKeys derives the sealing and hint keys of envelope key k.
func NewGroupKeys(k [32]byte) *GroupKeys {
	g := &GroupKeys{}
	hkdfSHA256(g.seal[:], nil, k[:], "Ferry group envelope v1")
	hkdfSHA256(g.hint[:], nil, k[:], "Ferry group hint v1")
	return g
}

func (g *GroupKeys) hintOf(nonce []byte) []byte {
	h := hmac.New(sha256.New, g.hint[:])
	h.Write(nonce)
	return h.Sum(nil)[:groupHintLen]
}

// SealGroup seals inner for a group: 24 bytes of nonce are read from
// rand.
func (g *GroupKeys) SealGroup(rand io.Reader, inner []byte) ([]byte, error) {
	p, err := pad(inner)
	if err != nil {
		return nil, err
	}
	out := make([]byte, groupEnvHeaderLen, groupEnvHeaderLen+len(p)+chacha20poly1305.Overhead)
	out[0] = groupEnvelopeVersion
	if _, err := io.ReadFull(rand, out[1:1+groupNonceLen]); err != nil {
		return nil, fmt.Errorf("seal group envelope: %w", err)
	}
	copy(out[1+groupNonceLen:], g.hintOf(out[1:1+groupNonceLen]))
	aead, _ := chacha20poly1305.NewX(g.seal[:])
	return aead.Seal(out, out[1:1+groupNonceLen], p, out[:groupEnvHeaderLen]), nil
}

// IsGroupEnvelope reports whether env has the layout of a group envelope
// (version byte and a valid length); it does not authenticate it.
func IsGroupEnvelope(env []byte) bool {
	return len(env) >= GroupEnvelopeOverhead && env[0] == groupEnvelopeVersion && isBucket(len(env)-GroupEnvelopeOverhead)
}

// Matches reports whether env's hint is the one g makes: env is then
// (almost certainly) sealed under g's key. It costs one HMAC.
func (g *GroupKeys) Matches(env []byte) bool {
	if !IsGroupEnvelope(env) {
		return false
	}
	return subtle.ConstantTimeCompare(g.hintOf(env[1:1+groupNonceLen]), env[1+groupNonceLen:groupEnvHeaderLen]) == 1
}

// OpenGroup opens a group envelope sealed under g's key. Every failure is
// ErrDecrypt (ErrMalformed for a bad layout).
func (g *GroupKeys) OpenGroup(env []byte) ([]byte, error) {
	if !IsGroupEnvelope(env) {
		return nil, fmt.Errorf("open group envelope: %w", ErrMalformed)
	}
	aead, _ := chacha20poly1305.NewX(g.seal[:])
	p, err := aead.Open(nil, env[1:1+groupNonceLen], env[groupEnvHeaderLen:], env[:groupEnvHeaderLen])
	if err != nil {
		return nil, fmt.Errorf("open group envelope: %w", ErrDecrypt)
	}
	inner, err := unpad(p)
	if err != nil {
		return nil, fmt.Errorf("open group envelope: %w", ErrDecrypt)
	}
	return inner, nil
}
