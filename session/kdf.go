package session

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding"
	"hash"
)

// KDF labels (docs/protocol.md section 2.2). Each is the ASCII bytes of the
// string, without a terminator.
const (
	// labelPQXDH is the HKDF info of the PQXDH key derivation.
	labelPQXDH = "Ferry_PQXDH_X25519_SHA-256_ML-KEM-768"
	// labelRatchet is the HKDF info of the root-key KDF (Signal's).
	labelRatchet = "WhisperRatchet"
	// labelMessageKeys is the HKDF info of the message-key KDF (Signal's).
	labelMessageKeys = "WhisperMessageKeys"
	// labelPrekeySig starts every prekey signature's message.
	labelPrekeySig = "Ferry_Prekey_v1"
)

const (
	keyLen  = 32 // every symmetric key, chain key and X25519 key
	hashLen = sha256.Size
)

// hmacSHA256 returns HMAC-SHA256(key, msg[0] || msg[1] || ...) for a key
// and message of any length. A key of at most 64 bytes with a message of at
// most 128 bytes (every KDF of this package) is done on the stack without
// allocating; anything longer goes through crypto/hmac.
func hmacSHA256(key []byte, msg ...[]byte) [hashLen]byte {
	const block = sha256.BlockSize
	var buf [block + 128]byte
	total := 0
	for _, m := range msg {
		total += len(m)
	}
	if len(key) > block || total > len(buf)-block {
		m := hmac.New(sha256.New, key)
		for _, p := range msg {
			m.Write(p)
		}
		var out [hashLen]byte
		m.Sum(out[:0])
		return out
	}
	for i := range block {
		buf[i] = 0x36
	}
	for i, k := range key {
		buf[i] ^= k
	}
	n := block
	for _, m := range msg {
		n += copy(buf[n:], m)
	}
	inner := sha256.Sum256(buf[:n])
	for i := range block {
		buf[i] ^= 0x36 ^ 0x5c
	}
	copy(buf[block:], inner[:])
	return sha256.Sum256(buf[:block+hashLen])
}

// hkdfSHA256 fills out with HKDF-SHA256(salt, ikm, info) (RFC 5869). An
// empty salt means hashLen zero bytes. ikm may be any length (at most 128
// bytes does not allocate); out is at most 255*32 bytes.
func hkdfSHA256(out, salt, ikm []byte, info string) {
	prk := hmacSHA256(salt, ikm)
	var t [hashLen]byte
	var tl int
	ctr := [1]byte{0}
	for n := 0; n < len(out); {
		ctr[0]++
		t = hmacSHA256(prk[:], t[:tl], []byte(info), ctr[:])
		tl = hashLen
		n += copy(out[n:], t[:])
	}
	clear(prk[:])
	clear(t[:])
}

// Chain-key KDF constants (Signal's).
var (
	chainMessageSeed = []byte{0x01}
	chainNext        = []byte{0x02}
)

// kdfCK is the symmetric-key ratchet step: it returns the message key seed
// HMAC-SHA256(ck, 0x01) and the next chain key HMAC-SHA256(ck, 0x02).
func kdfCK(ck *[keyLen]byte) (seed, next [keyLen]byte) {
	return hmacSHA256(ck[:], chainMessageSeed), hmacSHA256(ck[:], chainNext)
}

// messageKeys are the keys derived from one message key seed:
// HKDF-SHA256(salt = none, ikm = seed, info = "WhisperMessageKeys", 80 bytes)
// split as cipher key [0:32], MAC key [32:64], IV [64:80] (Signal's split).
// Ferry uses the cipher key as the ChaCha20-Poly1305 key of the body (nonce
// zero: the key is used once) and IV[0:12] as the header nonce; the MAC key
// is not used.
type messageKeys struct {
	cipherKey [32]byte
	macKey    [32]byte
	iv        [16]byte
}

// erase zeroes the keys (best effort: Go may have copied them).
func (mk *messageKeys) erase() {
	clear(mk.cipherKey[:])
	clear(mk.macKey[:])
	clear(mk.iv[:])
}

func deriveMessageKeys(seed *[keyLen]byte) messageKeys {
	var out [80]byte
	hkdfSHA256(out[:], nil, seed[:], labelMessageKeys)
	var mk messageKeys
	copy(mk.cipherKey[:], out[0:32])
	copy(mk.macKey[:], out[32:64])
	copy(mk.iv[:], out[64:80])
	clear(out[:])
	return mk
}

// kdfRK is the root-key KDF with header encryption:
// HKDF-SHA256(salt = rk, ikm = dh, info = "WhisperRatchet", 96 bytes) split
// as new root key [0:32], chain key [32:64], next header key [64:96]. The
// first 64 bytes are exactly Signal's root-key KDF output.
func kdfRK(rk *[keyLen]byte, dh []byte) (root, chain, nextHeader [keyLen]byte) {
	var out [3 * keyLen]byte
	hkdfSHA256(out[:], rk[:], dh, labelRatchet)
	copy(root[:], out[0:32])
	copy(chain[:], out[32:64])
	copy(nextHeader[:], out[64:96])
	clear(out[:])
	return
}

// A macHasher computes the per-message KDFs (kdfCK and deriveMessageKeys)
// with HMAC midstates: for each key it hashes key^ipad and key^opad once
// and restores those SHA-256 states for every MAC under that key, which
// cuts a message's SHA-256 compressions from 24 to 16. Its results equal
// kdfCK's and deriveMessageKeys' (TestMacHasherMatches). A Session owns
// one; it is not safe for concurrent use.
type macHasher struct {
	h            hash.Hash
	st           sha256State
	inner, outer [sha256StateMax]byte // states after key^ipad, key^opad
	ni, no       int
	msg          [2*hashLen + 32]byte // the message being MACed
	sum          [hashLen]byte
}

// sha256State is the marshalling interface of crypto/sha256's digest.
type sha256State interface {
	encoding.BinaryAppender
	encoding.BinaryUnmarshaler
}

// sha256StateMax bounds the length of a marshalled SHA-256 state (108
// bytes in Go 1.26).
const sha256StateMax = 128

// zeroKeyStates are the midstates of HMAC-SHA256 under the all-zero key,
// which HKDF-Extract with an empty salt uses.
var zeroKeyInner, zeroKeyOuter = func() ([]byte, []byte) {
	m := newMACHasher()
	m.setKey(nil)
	return append([]byte(nil), m.inner[:m.ni]...), append([]byte(nil), m.outer[:m.no]...)
}()

func newMACHasher() *macHasher {
	h := sha256.New()
	return &macHasher{h: h, st: h.(sha256State)}
}

// setKey absorbs key (at most 64 bytes) into the inner and outer states.
func (m *macHasher) setKey(key []byte) {
	var pad [sha256.BlockSize]byte
	for i := range pad {
		pad[i] = 0x36
	}
	for i, k := range key {
		pad[i] ^= k
	}
	m.h.Reset()
	m.writePad(&pad)
	b, _ := m.st.AppendBinary(m.inner[:0])
	m.ni = len(b)
	for i := range pad {
		pad[i] ^= 0x36 ^ 0x5c
	}
	m.h.Reset()
	m.writePad(&pad)
	b, _ = m.st.AppendBinary(m.outer[:0])
	m.no = len(b)
	clear(pad[:])
	clear(m.msg[:])
}

// writePad writes a 64-byte pad through m.msg (two halves), so that no
// stack buffer is passed to the hash interface.
func (m *macHasher) writePad(pad *[sha256.BlockSize]byte) {
	copy(m.msg[:32], pad[:32])
	m.h.Write(m.msg[:32])
	copy(m.msg[:32], pad[32:])
	m.h.Write(m.msg[:32])
}

// mac returns HMAC(key, m.msg[:n]) for the key whose states are given.
func (m *macHasher) mac(inner, outer []byte, n int) [hashLen]byte {
	m.st.UnmarshalBinary(inner)
	m.h.Write(m.msg[:n])
	m.h.Sum(m.sum[:0])
	m.st.UnmarshalBinary(outer)
	m.h.Write(m.sum[:])
	m.h.Sum(m.sum[:0])
	return m.sum
}

// chainStep is kdfCK.
func (m *macHasher) chainStep(ck *[keyLen]byte) (seed, next [keyLen]byte) {
	m.setKey(ck[:])
	m.msg[0] = 0x01
	seed = m.mac(m.inner[:m.ni], m.outer[:m.no], 1)
	m.msg[0] = 0x02
	next = m.mac(m.inner[:m.ni], m.outer[:m.no], 1)
	m.erase()
	return seed, next
}

// erase forgets the keyed states and the last digest, which are as secret
// as the key they came from (forward secrecy holds for memory too).
func (m *macHasher) erase() {
	clear(m.inner[:])
	clear(m.outer[:])
	clear(m.msg[:])
	clear(m.sum[:])
	m.h.Reset()
}

// messageKeys is deriveMessageKeys.
func (m *macHasher) messageKeys(seed *[keyLen]byte) messageKeys {
	copy(m.msg[:], seed[:])
	prk := m.mac(zeroKeyInner, zeroKeyOuter, keyLen)
	m.setKey(prk[:])
	var out [80]byte
	n := 0
	for i := byte(1); i <= 3; i++ {
		l := 0
		if i > 1 {
			l = copy(m.msg[:], out[n-hashLen:n])
		}
		l += copy(m.msg[l:], labelMessageKeys)
		m.msg[l] = i
		t := m.mac(m.inner[:m.ni], m.outer[:m.no], l+1)
		n += copy(out[n:], t[:])
	}
	var mk messageKeys
	copy(mk.cipherKey[:], out[0:32])
	copy(mk.macKey[:], out[32:64])
	copy(mk.iv[:], out[64:80])
	clear(out[:])
	clear(prk[:])
	m.erase()
	return mk
}
