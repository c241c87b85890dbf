package session

import (
	"bytes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// Message layouts (docs/protocol.md section 2.6).
//
//	ratchet message = 0x01 || enc_header(68) || body(len(plaintext)+16)
//	enc_header      = nonce(12) || ChaCha20-Poly1305(HK, nonce, header, ad = 0x01)
//	header          = ratchet public key(32) || PN(4, big-endian) || N(4, big-endian)
//	body            = ChaCha20-Poly1305(cipher key, zero nonce, plaintext,
//	                  ad = prefix || 0x01 || enc_header || AD || caller ad)
//
// where nonce = IV[0:12] of the message keys, AD = Encode(IK_A) ||
// Encode(IK_B) from PQXDH, and prefix is the initial-message prefix when
// the ratchet message travels inside an initial message (section 2.5),
// else empty.
const (
	msgRatchet = 0x01 // type byte of a ratchet message
	msgInitial = 0x02 // type byte of an initial (PQXDH) message

	headerLen       = keyLen + 4 + 4
	headerNonceLen  = chacha20poly1305.NonceSize
	tagLen          = chacha20poly1305.Overhead
	encHeaderLen    = headerNonceLen + headerLen + tagLen
	ratchetOverhead = 1 + encHeaderLen + tagLen

	adLen = 2 * 33 // Encode(IK_A) || Encode(IK_B)
)

// Bounds on skipped message keys (docs/protocol.md section 2.7).
const (
	// MaxSkip is the largest number of message keys one message may skip
	// in one receiving chain. A message further ahead fails with
	// ErrDecrypt.
	MaxSkip = 1000
	// MaxSkippedKeys is the most skipped message keys a session stores;
	// beyond it the oldest are deleted.
	MaxSkippedKeys = 2000
	// MaxSkippedChains is the most receiving chains whose skipped keys a
	// session keeps; beyond it the oldest chain's keys are deleted. Each
	// kept chain costs one trial header decryption per received message.
	MaxSkippedChains = 50
)

// errTooFar is wrapped in ErrDecrypt when a message skips more than MaxSkip keys.
var errTooFar = errors.New("message too far ahead")

// errNoSession is returned by the methods of a Session that Initiate,
// Respond or UnmarshalBinary has not set up (the zero Session).
var errNoSession = errors.New("session not set up")

// A Session is one side of a Double Ratchet session with header encryption,
// set up by Initiate or Respond, or restored with UnmarshalBinary.
//
// A Session is not safe for concurrent use. A failed Decrypt leaves it
// exactly as it was. The zero Session is not usable until UnmarshalBinary
// restores a saved one: until then Encrypt, Decrypt and MarshalBinary fail
// with an error.
type Session struct {
	// Rand is the source of randomness for new ratchet key pairs. If nil,
	// crypto/rand.Reader is used.
	Rand io.Reader

	st state

	// Caches, not part of the state.
	sendHdr    cipher.AEAD
	sendHdrKey [keyLen]byte
	recvHdr    cipher.AEAD
	recvHdrKey [keyLen]byte
	scratch    []byte
	hdrBuf     [headerLen]byte
	kdf        *macHasher
}

// state is everything that MarshalBinary saves (docs/protocol.md section
// 2.8). It is copied by value to stage a decryption; skipped is only
// changed when a decryption commits.
type state struct {
	initiator bool
	local     PublicIdentity
	remote    PublicIdentity
	uLocal    [keyLen]byte // X25519 form of local
	uRemote   [keyLen]byte // X25519 form of remote
	ad        [adLen]byte  // from uLocal and uRemote
	baseKey   [keyLen]byte // the initiator's PQXDH ephemeral public key

	rk      [keyLen]byte
	dhsPriv [keyLen]byte
	dhsPub  [keyLen]byte
	// dhs is dhsPriv as a crypto/ecdh key, built on first use: building
	// one costs a scalar multiplication, which loading a state should not.
	dhs    *ecdh.PrivateKey
	dhr    [keyLen]byte
	hasDHr bool
	cks    [keyLen]byte
	hasCKs bool
	ckr    [keyLen]byte
	hasCKr bool
	hks    [keyLen]byte
	hasHKs bool
	hkr    [keyLen]byte
	hasHKr bool
	nhks   [keyLen]byte
	nhkr   [keyLen]byte
	ns     uint32
	nr     uint32
	pn     uint32

	skipped  []skippedChain // oldest first
	nSkipped int

	// pending is the initial-message prefix (section 2.5) the initiator
	// puts before every message until it first decrypts a reply.
	pending []byte
}

// A skippedChain holds the skipped message keys of one receiving chain, by
// the chain's header key, in increasing N.
type skippedChain struct {
	hk   [keyLen]byte
	keys []skippedKey
}

type skippedKey struct {
	n    uint32
	seed [keyLen]byte // message key seed, HMAC-SHA256(ck, 0x01)
}

// hasher returns the session's KDF hasher, making it on first use.
func (s *Session) hasher() *macHasher {
	if s.kdf == nil {
		s.kdf = newMACHasher()
	}
	return s.kdf
}

// ready reports whether the session was set up. Every set-up state has
// both identities, and no valid identity encodes as all zeros.
func (s *Session) ready() bool {
	return s.st.local != PublicIdentity{} && s.st.remote != PublicIdentity{}
}

func (s *Session) rand() io.Reader {
	if s.Rand != nil {
		return s.Rand
	}
	return rand.Reader
}

// LocalIdentity returns the identity key of this side of the session.
func (s *Session) LocalIdentity() PublicIdentity { return s.st.local }

// RemoteIdentity returns the identity key of the peer, as authenticated by
// PQXDH. PQXDH authenticates it only up to the sign bit of x: compare it
// with PublicIdentity.Equal, or key maps by its Canonical form.
func (s *Session) RemoteIdentity() PublicIdentity { return s.st.remote }

// generateX25519 draws a fresh X25519 key pair from 32 bytes of r.
func generateX25519(r io.Reader) (*ecdh.PrivateKey, error) {
	var b [keyLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return nil, fmt.Errorf("generate x25519 key: %w", err)
	}
	k, err := ecdh.X25519().NewPrivateKey(b[:])
	clear(b[:])
	return k, err
}

// x25519 computes X25519(priv, pub) and fails with ErrInvalidKey on an
// all-zero output.
func x25519(priv *ecdh.PrivateKey, pub []byte) ([]byte, error) {
	p, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, ErrInvalidKey
	}
	out, err := priv.ECDH(p)
	if err != nil {
		return nil, ErrInvalidKey
	}
	return out, nil
}

// initAlice is RatchetInitAliceHE: the initiator's state after PQXDH, with
// Bob's signed prekey as his first ratchet key.
func (st *state) initAlice(r io.Reader, sk, hka, nhkb *[keyLen]byte, bobRatchet []byte) error {
	dhs, err := generateX25519(r)
	if err != nil {
		return err
	}
	dh, err := x25519(dhs, bobRatchet)
	if err != nil {
		return err
	}
	st.setDHs(dhs)
	copy(st.dhr[:], bobRatchet)
	st.hasDHr = true
	st.rk, st.cks, st.nhks = kdfRK(sk, dh)
	st.hasCKs = true
	st.hks, st.hasHKs = *hka, true
	st.nhkr = *nhkb
	return nil
}

// initBob is RatchetInitBobHE: the responder's state after PQXDH, with its
// signed prekey pair as the first ratchet key.
func (st *state) initBob(sk, hka, nhkb *[keyLen]byte, spk *ecdh.PrivateKey) {
	st.setDHs(spk)
	st.rk = *sk
	st.nhks = *nhkb
	st.nhkr = *hka
}

// Encrypt encrypts plaintext for the peer, authenticating ad as well (the
// peer must pass the same ad to Decrypt). The result is opaque bytes: an
// initial message until the session has decrypted a message from the peer
// (initiator only), a ratchet message afterwards.
func (s *Session) Encrypt(plaintext, ad []byte) ([]byte, error) {
	if !s.ready() {
		return nil, fmt.Errorf("encrypt: %w", errNoSession)
	}
	st := &s.st
	if !st.hasCKs || !st.hasHKs {
		return nil, errors.New("encrypt: session has no sending chain")
	}
	if st.ns == ^uint32(0) {
		return nil, errors.New("encrypt: sending chain exhausted")
	}
	seed, next := s.hasher().chainStep(&st.cks)
	mk := s.hasher().messageKeys(&seed)
	clear(seed[:])

	out := make([]byte, len(st.pending), len(st.pending)+ratchetOverhead+len(plaintext))
	copy(out, st.pending)
	out = append(out, msgRatchet)

	// Header, sealed in place in out (nonce and header are written there
	// first, so nothing escapes to the heap through the AEAD interface).
	out = append(out, mk.iv[:headerNonceLen]...)
	p := len(out)
	nonce := out[p-headerNonceLen : p]
	out = append(out, st.dhsPub[:]...)
	out = binary.BigEndian.AppendUint32(out, st.pn)
	out = binary.BigEndian.AppendUint32(out, st.ns)
	out = s.headerAEAD(true, &st.hks).Seal(out[:p], nonce, out[p:p+headerLen], headerAD)
	encHeader := out[len(out)-encHeaderLen-1:]

	// Body.
	out = mustAEAD(&mk.cipherKey).Seal(out, zeroNonce[:], plaintext, s.bodyAD(st.pending, encHeader, ad))
	mk.erase()

	st.cks = next
	st.ns++
	return out, nil
}

// SkipSending moves the sending chain n message keys ahead (n at most
// MaxSkip), discarding the keys unused; the next message says it skipped
// them, and the receiver, which accepts up to MaxSkip skipped keys, keeps
// their keys as it would for lost messages. A profile restored from a
// backup does this to every session (docs/client.md section 1.5): the
// original may have sent messages with the keys after the backup's
// position, and sending with them again would encrypt two plaintexts
// under one key. A session without a sending chain is left as it is.
func (s *Session) SkipSending(n uint32) error {
	if !s.ready() {
		return fmt.Errorf("skip: %w", errNoSession)
	}
	if n > MaxSkip {
		return fmt.Errorf("skip %d keys: more than MaxSkip (%d)", n, MaxSkip)
	}
	st := &s.st
	if !st.hasCKs {
		return nil
	}
	if uint64(st.ns)+uint64(n) >= uint64(^uint32(0)) {
		return errors.New("skip: sending chain exhausted")
	}
	for range n {
		seed, next := s.hasher().chainStep(&st.cks)
		clear(seed[:])
		st.cks = next
		st.ns++
	}
	return nil
}

// bodyAD returns prefix || 0x01 || enc_header || AD || ad in a reused
// buffer. typeAndHeader starts with the type byte; prefix is the
// initial-message prefix or empty.
func (s *Session) bodyAD(prefix, typeAndHeader, ad []byte) []byte {
	return s.bodyADWith(&s.st, prefix, typeAndHeader, ad)
}

func (s *Session) bodyADWith(st *state, prefix, typeAndHeader, ad []byte) []byte {
	b := append(s.scratch[:0], prefix...)
	b = append(b, typeAndHeader[:1+encHeaderLen]...)
	b = append(b, st.ad[:]...)
	s.scratch = append(b, ad...)
	return s.scratch
}

// headerAEAD returns a ChaCha20-Poly1305 instance for key, cached in the
// send or receive slot.
func (s *Session) headerAEAD(send bool, key *[keyLen]byte) cipher.AEAD {
	slot, slotKey := &s.recvHdr, &s.recvHdrKey
	if send {
		slot, slotKey = &s.sendHdr, &s.sendHdrKey
	}
	if *slot == nil || *slotKey != *key {
		*slot, *slotKey = mustAEAD(key), *key
	}
	return *slot
}

// headerAD is the associated data of every encrypted header: the message
// type byte. zeroNonce is the body's nonce (each body key is used once).
var (
	headerAD  = []byte{msgRatchet}
	zeroNonce [chacha20poly1305.NonceSize]byte
)

// setDHs makes k the sending ratchet key pair.
func (st *state) setDHs(k *ecdh.PrivateKey) {
	st.dhs = k
	copy(st.dhsPriv[:], k.Bytes())
	copy(st.dhsPub[:], k.PublicKey().Bytes())
}

// dhsKey returns the sending ratchet private key, building it if needed.
func (st *state) dhsKey() (*ecdh.PrivateKey, error) {
	if st.dhs == nil {
		k, err := ecdh.X25519().NewPrivateKey(st.dhsPriv[:])
		if err != nil {
			return nil, err
		}
		st.dhs = k
	}
	return st.dhs, nil
}

// setIdentities sets the identities, their X25519 forms and AD.
func (st *state) setIdentities(local, remote PublicIdentity, uLocal, uRemote *[keyLen]byte) {
	st.local, st.remote = local, remote
	st.uLocal, st.uRemote = *uLocal, *uRemote
	if st.initiator {
		st.ad = associatedData(uLocal, uRemote)
	} else {
		st.ad = associatedData(uRemote, uLocal)
	}
}

// header is a decrypted message header.
type header struct {
	dh [keyLen]byte
	pn uint32
	n  uint32
}

// openHeader decrypts encHeader (nonce || sealed header) with a, using
// buf for the plaintext.
func openHeader(a cipher.AEAD, encHeader []byte, buf *[headerLen]byte) (header, bool) {
	var h header
	p, err := a.Open(buf[:0], encHeader[:headerNonceLen], encHeader[headerNonceLen:], headerAD)
	if err != nil {
		return h, false
	}
	copy(h.dh[:], p[:keyLen])
	h.pn = binary.BigEndian.Uint32(p[32:36])
	h.n = binary.BigEndian.Uint32(p[36:40])
	return h, true
}

// Decrypt authenticates and decrypts a message from the peer, with the same
// ad the peer passed to Encrypt. It accepts ratchet messages and, for the
// responder, initial messages of this session (the initiator repeats the
// PQXDH prefix until it hears back). Messages may arrive out of order, up to
// MaxSkip ahead within a chain.
//
// On any failure, including ErrDecrypt for a forged, truncated, replayed or
// too-far-ahead message, the session is unchanged.
func (s *Session) Decrypt(msg, ad []byte) ([]byte, error) {
	if !s.ready() {
		return nil, fmt.Errorf("decrypt: %w", errNoSession)
	}
	var prefix []byte
	if len(msg) > 0 && msg[0] == msgInitial {
		im, err := parseInitialMessage(msg)
		if err != nil {
			return nil, fmt.Errorf("decrypt: %w", ErrDecrypt)
		}
		if s.st.initiator || im.identity != s.st.remote || im.ephemeral != s.st.baseKey {
			return nil, fmt.Errorf("decrypt: initial message of another session: %w", ErrDecrypt)
		}
		prefix, msg = msg[:len(msg)-len(im.ratchet)], im.ratchet
	}
	if len(msg) < ratchetOverhead || msg[0] != msgRatchet {
		return nil, fmt.Errorf("decrypt: %w", ErrDecrypt)
	}
	pt, err := s.decrypt(prefix, msg, ad)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	return pt, nil
}

func (s *Session) decrypt(prefix, msg, ad []byte) ([]byte, error) {
	encHeader := msg[1 : 1+encHeaderLen]
	body := msg[1+encHeaderLen:]
	st := &s.st

	// 1. A skipped message key?
	for ci := range st.skipped {
		ch := &st.skipped[ci]
		h, ok := openHeader(mustAEAD(&ch.hk), encHeader, &s.hdrBuf)
		if !ok {
			continue
		}
		for ki := range ch.keys {
			if ch.keys[ki].n != h.n {
				continue
			}
			pt, ok := s.openBodyWith(st, &ch.keys[ki].seed, prefix, msg, body, ad)
			if !ok {
				return nil, ErrDecrypt
			}
			// Commit: delete the key.
			clear(ch.keys[ki].seed[:])
			ch.keys = append(ch.keys[:ki], ch.keys[ki+1:]...)
			if len(ch.keys) == 0 {
				st.skipped = append(st.skipped[:ci], st.skipped[ci+1:]...)
			}
			st.nSkipped--
			st.pending = nil
			return pt, nil
		}
		break // the header key matched but the key is gone or not yet due
	}

	// 2. The current receiving chain?
	if st.hasHKr {
		if h, ok := openHeader(s.headerAEAD(false, &st.hkr), encHeader, &s.hdrBuf); ok {
			if subtle.ConstantTimeCompare(h.dh[:], st.dhr[:]) != 1 || !st.hasCKr {
				return nil, ErrDecrypt
			}
			if h.n < st.nr {
				return nil, ErrDecrypt // replayed, or its key was evicted
			}
			if h.n-st.nr > MaxSkip {
				return nil, fmt.Errorf("%w: %w", ErrDecrypt, errTooFar)
			}
			ckr := st.ckr
			skipped := skipKeys(s.hasher(), &ckr, st.nr, h.n)
			seed, next := s.hasher().chainStep(&ckr)
			pt, ok := s.openBodyWith(st, &seed, prefix, msg, body, ad)
			if !ok {
				return nil, ErrDecrypt
			}
			st.ckr = next
			st.nr = h.n + 1
			st.storeSkipped(st.hkr, skipped)
			st.pending = nil
			return pt, nil
		}
	}

	// 3. The next receiving chain: a DH ratchet step.
	h, ok := openHeader(mustAEAD(&st.nhkr), encHeader, &s.hdrBuf)
	if !ok {
		return nil, ErrDecrypt
	}
	ns := *st // staged copy; skipped is not touched until commit
	var oldSkipped []skippedKey
	if ns.hasCKr {
		if h.pn < ns.nr {
			return nil, ErrDecrypt
		}
		if h.pn-ns.nr > MaxSkip {
			return nil, fmt.Errorf("%w: %w", ErrDecrypt, errTooFar)
		}
		oldSkipped = skipKeys(s.hasher(), &ns.ckr, ns.nr, h.pn)
	}
	if h.n > MaxSkip {
		return nil, fmt.Errorf("%w: %w", ErrDecrypt, errTooFar)
	}
	oldHKr, hadHKr := ns.hkr, ns.hasHKr
	if err := ns.dhRatchetRecv(&h); err != nil {
		return nil, err
	}
	newSkipped := skipKeys(s.hasher(), &ns.ckr, 0, h.n)
	seed, next := s.hasher().chainStep(&ns.ckr)
	pt, ok := s.openBodyWith(&ns, &seed, prefix, msg, body, ad)
	if !ok {
		return nil, ErrDecrypt
	}
	// Only now, with the body authentic, draw the new ratchet key: a
	// failed Decrypt reads nothing from Session.Rand (section 2.7).
	if err := ns.dhRatchetSend(s.rand(), &h); err != nil {
		clear(pt)
		return nil, err
	}
	ns.ckr = next
	ns.nr = h.n + 1
	ns.pending = nil
	*st = ns
	if hadHKr {
		st.storeSkipped(oldHKr, oldSkipped)
	}
	st.storeSkipped(st.hkr, newSkipped)
	return pt, nil
}

// mustAEAD returns the ChaCha20-Poly1305 AEAD of key, for headers and
// bodies alike.
func mustAEAD(key *[keyLen]byte) cipher.AEAD {
	a, _ := chacha20poly1305.New(key[:]) // cannot fail: 32-byte key
	return a
}

// dhRatchetRecv is the receiving half of DHRatchetHE on a staged state:
// it moves to the peer's new ratchet key and derives the new receiving
// chain. It reads no randomness, so the body can be checked before
// dhRatchetSend draws the new sending key.
func (st *state) dhRatchetRecv(h *header) error {
	dhs0, err := st.dhsKey()
	if err != nil {
		return ErrDecrypt
	}
	dh, err := x25519(dhs0, h.dh[:])
	if err != nil {
		return ErrDecrypt
	}
	st.pn = st.ns
	st.ns, st.nr = 0, 0
	st.hks, st.hasHKs = st.nhks, true
	st.hkr, st.hasHKr = st.nhkr, true
	st.dhr, st.hasDHr = h.dh, true
	st.rk, st.ckr, st.nhkr = kdfRK(&st.rk, dh)
	st.hasCKr = true
	return nil
}

// dhRatchetSend is the sending half of DHRatchetHE, after dhRatchetRecv:
// a new ratchet key pair from 32 bytes of r and the new sending chain.
func (st *state) dhRatchetSend(r io.Reader, h *header) error {
	dhs, err := generateX25519(r)
	if err != nil {
		return err
	}
	dh2, err := x25519(dhs, h.dh[:])
	if err != nil {
		return ErrDecrypt
	}
	st.setDHs(dhs)
	st.rk, st.cks, st.nhks = kdfRK(&st.rk, dh2)
	st.hasCKs = true
	return nil
}

// skipKeys advances ck from index from to index until and returns the
// skipped message key seeds.
func skipKeys(m *macHasher, ck *[keyLen]byte, from, until uint32) []skippedKey {
	var dst []skippedKey
	for n := from; n < until; n++ {
		seed, next := m.chainStep(ck)
		dst = append(dst, skippedKey{n: n, seed: seed})
		*ck = next
	}
	return dst
}

// storeSkipped adds keys of the chain with header key hk, then deletes the
// oldest stored keys beyond MaxSkippedKeys.
func (st *state) storeSkipped(hk [keyLen]byte, keys []skippedKey) {
	if len(keys) == 0 {
		return
	}
	if l := len(st.skipped); l > 0 && st.skipped[l-1].hk == hk {
		st.skipped[l-1].keys = append(st.skipped[l-1].keys, keys...)
	} else {
		st.skipped = append(st.skipped, skippedChain{hk: hk, keys: keys})
	}
	st.nSkipped += len(keys)
	for len(st.skipped) > MaxSkippedChains {
		for i := range st.skipped[0].keys {
			clear(st.skipped[0].keys[i].seed[:])
		}
		st.nSkipped -= len(st.skipped[0].keys)
		st.skipped = st.skipped[1:]
	}
	for st.nSkipped > MaxSkippedKeys {
		ch := &st.skipped[0]
		drop := min(st.nSkipped-MaxSkippedKeys, len(ch.keys))
		for i := range drop {
			clear(ch.keys[i].seed[:])
		}
		ch.keys = ch.keys[drop:]
		st.nSkipped -= drop
		if len(ch.keys) == 0 {
			st.skipped = st.skipped[1:]
		}
	}
}

// openBodyWith decrypts the body of msg with the message key seed, using
// st's associated data.
func (s *Session) openBodyWith(st *state, seed *[keyLen]byte, prefix, msg, body, ad []byte) ([]byte, bool) {
	mk := s.hasher().messageKeys(seed)
	defer mk.erase()
	if !bytes.Equal(mk.iv[:headerNonceLen], msg[1:1+headerNonceLen]) {
		return nil, false
	}
	pt, err := mustAEAD(&mk.cipherKey).Open(nil, zeroNonce[:], body, s.bodyADWith(st, prefix, msg, ad))
	if err != nil {
		return nil, false
	}
	return pt, true
}
