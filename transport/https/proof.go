package https

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// The upgrade request (docs/transports.md section 4.4). A client proves that
// it holds the relay's secret with a cookie on a request to the relay's
// secret path:
//
//	path   = "/" || b64(HKDF-SHA256(secret, info "ferry https path v1")[:12])
//	macKey = HKDF-SHA256(secret, info "ferry https proof v1")[:32]
//	proof  = time(8) || nonce(16) || tag(16)                 40 bytes, b64 in the cookie
//	time   = big-endian Unix seconds when the request was made
//	tag    = HMAC-SHA256(macKey, "ferry https proof v1" || path || time || nonce)[:16]
//
// b64 is unpadded base64url. The relay accepts a proof whose time is within
// MaxClockSkew of its clock and whose nonce it has not accepted before.
const (
	SecretLen  = 32
	proofLen   = 8 + nonceLen + tagLen
	nonceLen   = 16
	tagLen     = 16
	pathIDLen  = 12
	cookieName = "sid"

	infoPath  = "ferry https path v1"
	infoProof = "ferry https proof v1"
)

// DefaultMaxClockSkew is how far a proof's time may be from the relay's
// clock when Config.MaxClockSkew is zero.
const DefaultMaxClockSkew = 10 * time.Minute

// DefaultReplayCapacity is how many accepted proofs the relay remembers
// when ServerConfig.ReplayCapacity is zero.
const DefaultReplayCapacity = 1 << 16

var b64 = base64.RawURLEncoding.Strict()

// Secret is a relay's https secret: every client of the relay has it,
// from the key parameter of the relay's link.
type Secret [SecretLen]byte

// String is the secret's text form in links: unpadded base64url.
func (s Secret) String() string { return b64.EncodeToString(s[:]) }

// ParseSecret parses the text form of a secret.
func ParseSecret(text string) (Secret, error) {
	var s Secret
	raw, err := b64.DecodeString(text)
	if err != nil || len(raw) != SecretLen {
		return s, errors.New("parse https secret: want 43 characters of unpadded base64url")
	}
	copy(s[:], raw)
	return s, nil
}

// keys are what the client and relay derive from a secret.
type keys struct {
	path   string // the secret path, "/" and 16 characters
	macKey []byte
}

func deriveKeys(s Secret) keys {
	id, err := hkdf.Key(sha256.New, s[:], nil, infoPath, pathIDLen)
	if err != nil {
		panic(err) // only for lengths hkdf cannot produce
	}
	mac, err := hkdf.Key(sha256.New, s[:], nil, infoProof, 32)
	if err != nil {
		panic(err)
	}
	return keys{path: "/" + b64.EncodeToString(id), macKey: mac}
}

// tag computes the tag of a proof's time and nonce.
func (k keys) tag(ts, nonce []byte) []byte {
	m := hmac.New(sha256.New, k.macKey)
	m.Write([]byte(infoProof))
	m.Write([]byte(k.path))
	m.Write(ts)
	m.Write(nonce)
	return m.Sum(nil)[:tagLen]
}

// proof returns the cookie value proving the secret at time now.
func (k keys) proof(now time.Time, nonce [nonceLen]byte) string {
	b := make([]byte, 0, proofLen)
	b = binary.BigEndian.AppendUint64(b, uint64(now.Unix()))
	b = append(b, nonce[:]...)
	b = append(b, k.tag(b[:8], nonce[:])...)
	return b64.EncodeToString(b)
}

// Proof is a parsed proof: its time and nonce. It says nothing about
// whether the tag was right; see keys.check.
type Proof struct {
	Time  int64
	Nonce [nonceLen]byte
	Tag   [tagLen]byte
}

// ParseProof parses a proof's text form. It accepts exactly what
// keys.proof writes.
func ParseProof(text string) (Proof, error) {
	var p Proof
	if len(text) != b64.EncodedLen(proofLen) {
		return p, fmt.Errorf("parse proof: %d characters, want %d", len(text), b64.EncodedLen(proofLen))
	}
	raw, err := b64.DecodeString(text)
	if err != nil {
		return p, errors.New("parse proof: not base64url")
	}
	p.Time = int64(binary.BigEndian.Uint64(raw[:8]))
	copy(p.Nonce[:], raw[8:8+nonceLen])
	copy(p.Tag[:], raw[8+nonceLen:])
	return p, nil
}

// Marshal is the inverse of ParseProof.
func (p Proof) Marshal() string {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, proofLen), uint64(p.Time))
	b = append(b, p.Nonce[:]...)
	b = append(b, p.Tag[:]...)
	return b64.EncodeToString(b)
}

// Errors of keys.check; the relay treats them all alike (the request goes
// to the website), they differ only for tests.
var (
	errProofTag     = errors.New("proof tag does not match")
	errProofTime    = errors.New("proof time is too far from the relay's clock")
	errProofReplay  = errors.New("proof was used before")
	errReplayFilled = errors.New("replay filter is full")
)

// check verifies a proof's tag and time against the relay's clock. It does
// not consult the replay filter.
func (k keys) check(p Proof, now time.Time, skew time.Duration) error {
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(p.Time))
	if !hmac.Equal(k.tag(ts[:], p.Nonce[:]), p.Tag[:]) {
		return errProofTag
	}
	d := now.Sub(time.Unix(p.Time, 0))
	if d > skew || d < -skew {
		return errProofTime
	}
	return nil
}

// replayFilter remembers the nonces of accepted proofs until their time
// is out of the skew window, so each proof is accepted at most once.
type replayFilter struct {
	mu    sync.Mutex // mu protects seen and queue
	seen  map[[nonceLen]byte]struct{}
	queue []replayEntry // in order of acceptance
	max   int
}

type replayEntry struct {
	nonce  [nonceLen]byte
	expiry time.Time // after this, check rejects the proof's time anyway
}

func newReplayFilter(capacity int) *replayFilter {
	return &replayFilter{seen: make(map[[nonceLen]byte]struct{}), max: capacity}
}

// add records nonce until expiry. It fails if the nonce is known, or if
// the filter holds capacity unexpired nonces (then nothing is accepted
// until some expire: a replay must never pass because the filter forgot).
func (f *replayFilter) add(nonce [nonceLen]byte, expiry, now time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Entries expire in roughly acceptance order; drop expired ones from
	// the front. One that expires later than those behind it only delays
	// their removal.
	n := 0
	for n < len(f.queue) && f.queue[n].expiry.Before(now) {
		delete(f.seen, f.queue[n].nonce)
		n++
	}
	if n > 0 {
		f.queue = append(f.queue[:0], f.queue[n:]...)
	}
	if _, ok := f.seen[nonce]; ok {
		return errProofReplay
	}
	if len(f.queue) >= f.max {
		return errReplayFilled
	}
	f.seen[nonce] = struct{}{}
	f.queue = append(f.queue, replayEntry{nonce: nonce, expiry: expiry})
	return nil
}
