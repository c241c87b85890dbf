// Package ranking is the signed ranking of transports that a monitor
// publishes, per network, through a relay, and that clients use to order a
// link's endpoints before they dial: the closed loop of docs/monitor.md
// section 12. It holds the byte format, signing (a ranking key certified
// by the relay's static key with XEdDSA) and the verification and ordering
// a client needs.
//
// It is not the monitor: it knows nothing of trials, and it imports
// neither package monitor nor package session, so the relay could carry
// it, although the relay only ever stores the bytes.
package ranking

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"
)

// The blob (docs/protocol.md section 6.12):
//
//	blob    = "FRK" version(1)=1 || cert || body || sig(64)
//	cert    = relayKey(32) || rankingKey(32) || certExpires(8) || certSig(64)
//	body    = issued(8) || expires(8) || count(1) || network*
//	network = nameLen(1) || name || prefixCount(1) || prefix* || entryCount(1) || entry*
//	prefix  = bits(1) || addrLen(1: 4 or 16) || addr
//	entry   = nameLen(1, 1..16) || transport || state(1) || score(1, 0..100)
//
// Times are Unix seconds, big-endian. certSig is XEdDSA by the relay's
// static X25519 key over certLabel || relayKey || rankingKey ||
// certExpires; sig is Ed25519 by the ranking key over rankingLabel || every
// byte before it.
const (
	magic        = "FRK"
	Version      = 1
	certLen      = 32 + 32 + 8 + 64
	certLabel    = "ferry ranking cert v1"
	rankingLabel = "ferry ranking v1"
	// MaxBlob is the largest blob a relay stores and a client reads.
	MaxBlob = 16 << 10
	// MaxSkew is how far ahead of the client's clock a ranking's issue
	// time may be.
	MaxSkew = 10 * time.Minute
	// DefaultTTL is how long a ranking is valid when Ranking.Expires is
	// zero.
	DefaultTTL = 2 * time.Hour
)

// State is what the monitor concluded about a transport on a network.
type State uint8

// States, in their byte values.
const (
	Unknown State = iota
	OK
	Degraded
	Throttled
	Intermittent
	Blocked
)

var stateNames = [...]string{"unknown", "ok", "degraded", "throttled", "intermittent", "blocked"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", s)
}

// ParseState returns the State called name ("unknown" for names it does
// not know).
func ParseState(name string) State {
	if i := slices.Index(stateNames[:], name); i >= 0 {
		return State(i)
	}
	return Unknown
}

// Entry is one transport's rank on a network: higher scores are tried
// first.
type Entry struct {
	Transport string
	State     State
	Score     uint8 // 0..100
}

// Network is a set of address prefixes (a vantage's ISP) and the ranking
// of transports there. A network without prefixes is the default, for
// clients that match no other.
type Network struct {
	Name     string
	Prefixes []netip.Prefix
	Entries  []Entry
}

// Ranking is a verified (or to be signed) ranking.
type Ranking struct {
	// Cert certifies the key that signed the ranking.
	Cert Cert
	// Issued and Expires bound when the ranking holds.
	Issued, Expires time.Time
	Networks        []Network
}

// Errors a client branches on; every error Verify returns wraps one.
var (
	// ErrMalformed: the bytes are not a ranking of this version.
	ErrMalformed = errors.New("malformed ranking")
	// ErrForged: a signature does not verify, or the ranking is for
	// another relay.
	ErrForged = errors.New("forged ranking")
	// ErrStale: the ranking or its certificate expired, or it was issued
	// in the future.
	ErrStale = errors.New("stale ranking")
)

// Cert is the relay's certificate of a ranking key.
type Cert struct {
	RelayKey [32]byte // the relay's static X25519 public key
	Key      [32]byte // the Ed25519 ranking key
	Expires  time.Time
	Sig      [64]byte // XEdDSA by the relay key
}

func (c *Cert) signed() []byte {
	b := append([]byte(certLabel), c.RelayKey[:]...)
	b = append(b, c.Key[:]...)
	return binary.BigEndian.AppendUint64(b, uint64(c.Expires.Unix()))
}

// NewCert certifies rankingKey with the relay's static private key until
// expires.
func NewCert(relayPrivate [32]byte, rankingKey ed25519.PublicKey, expires time.Time, rnd io.Reader) (Cert, error) {
	k, err := ecdh.X25519().NewPrivateKey(relayPrivate[:])
	if err != nil {
		return Cert{}, fmt.Errorf("certify ranking key: %w", err)
	}
	if len(rankingKey) != ed25519.PublicKeySize {
		return Cert{}, errors.New("certify ranking key: not an Ed25519 public key")
	}
	c := Cert{Expires: time.Unix(expires.Unix(), 0)}
	copy(c.RelayKey[:], k.PublicKey().Bytes())
	copy(c.Key[:], rankingKey)
	if c.Sig, err = xeddsaSign(relayPrivate, c.signed(), rnd); err != nil {
		return Cert{}, fmt.Errorf("certify ranking key: %w", err)
	}
	return c, nil
}

// MarshalBinary encodes the certificate.
func (c Cert) MarshalBinary() ([]byte, error) {
	return append(c.signed()[len(certLabel):], c.Sig[:]...), nil
}

// UnmarshalBinary decodes a certificate (without verifying it).
func (c *Cert) UnmarshalBinary(b []byte) error {
	if len(b) != certLen {
		return fmt.Errorf("%w: certificate of %d bytes", ErrMalformed, len(b))
	}
	copy(c.RelayKey[:], b[:32])
	copy(c.Key[:], b[32:64])
	c.Expires = time.Unix(int64(binary.BigEndian.Uint64(b[64:72])), 0)
	copy(c.Sig[:], b[72:])
	return nil
}

// Verify checks that the relay key relayKey certified the ranking key and
// that the certificate holds at now.
func (c *Cert) Verify(relayKey [32]byte, now time.Time) error {
	if c.RelayKey != relayKey {
		return fmt.Errorf("%w: certified by another relay", ErrForged)
	}
	if !xeddsaVerify(relayKey, c.signed(), c.Sig[:]) {
		return fmt.Errorf("%w: the relay's signature of the ranking key does not verify", ErrForged)
	}
	if !now.Before(c.Expires) {
		return fmt.Errorf("%w: the ranking key's certificate expired at %v", ErrStale, c.Expires.UTC())
	}
	return nil
}
