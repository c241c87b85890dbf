package session

import (
	"crypto/sha256"
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

// hmacSHA256 returns HMAC-SHA256(key, msg[0] || msg[1] || ...). key is at
// most 64 bytes and the message at most 128 bytes, which is all this package
// needs; it works on the stack and does not allocate.
func hmacSHA256(key []byte, msg ...[]byte) [hashLen]byte {
	const block = sha256.BlockSize
	var buf [block + 128]byte
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
// empty salt means hashLen zero bytes. ikm is at most 128 bytes, out at most
// 255*32 bytes.
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

// hkdfLong is hkdfSHA256 for input key material longer than 128 bytes (the
// PQXDH secret), through a streaming HMAC.
func hkdfLong(out, salt, ikm []byte, info string) {
	prk := hmacLong(salt, ikm)
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
}

// hmacLong is HMAC-SHA256 for a message of any length (key at most 64 bytes).
func hmacLong(key, msg []byte) [hashLen]byte {
	var pad [sha256.BlockSize]byte
	for i := range pad {
		pad[i] = 0x36
	}
	for i, k := range key {
		pad[i] ^= k
	}
	h := sha256.New()
	h.Write(pad[:])
	h.Write(msg)
	var inner [hashLen]byte
	h.Sum(inner[:0])
	for i := range pad {
		pad[i] ^= 0x36 ^ 0x5c
	}
	h.Reset()
	h.Write(pad[:])
	h.Write(inner[:])
	var out [hashLen]byte
	h.Sum(out[:0])
	return out
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
