package session

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding"
	"fmt"
	"io"
	"math/big"
)

var (
	_ encoding.BinaryMarshaler   = (*Identity)(nil)
	_ encoding.BinaryUnmarshaler = (*Identity)(nil)
)

// An Identity is a long-term identity key pair: an Ed25519 key for
// signatures, used in its X25519 form for key agreement (docs/protocol.md
// section 2.1). The X25519 private key is the clamped Ed25519 secret scalar,
// SHA-512(seed)[:32]; the X25519 public key is the birational image
// u = (1+y)/(1-y) of the Ed25519 public key.
//
// An Identity is immutable and safe for concurrent use. The zero Identity
// is not usable: make one with NewIdentity or UnmarshalBinary.
type Identity struct {
	seed  [ed25519.SeedSize]byte
	priv  ed25519.PrivateKey
	pub   PublicIdentity
	xpriv *ecdh.PrivateKey
	xpub  [32]byte // X25519(xpriv, 9), equal to the mapped public key
}

// identityVersion is the first byte of a marshalled Identity.
//
//	identity = version(1) = 0x01 || ed25519 seed(32)
const (
	identityVersion = 0x01
	identityLen     = 1 + ed25519.SeedSize
)

// NewIdentity generates an identity from 32 bytes read from rand.
func NewIdentity(rand io.Reader) (*Identity, error) {
	var seed [ed25519.SeedSize]byte
	if _, err := io.ReadFull(rand, seed[:]); err != nil {
		return nil, fmt.Errorf("generate identity: %w", err)
	}
	return identityFromSeed(seed)
}

func identityFromSeed(seed [ed25519.SeedSize]byte) (*Identity, error) {
	id := &Identity{seed: seed, priv: ed25519.NewKeyFromSeed(seed[:])}
	copy(id.pub[:], id.priv.Public().(ed25519.PublicKey))
	h := sha512.Sum512(seed[:])
	h[0] &= 248
	h[31] &= 127
	h[31] |= 64
	xpriv, err := ecdh.X25519().NewPrivateKey(h[:32])
	clear(h[:])
	if err != nil {
		return nil, fmt.Errorf("derive x25519 identity key: %v", err)
	}
	id.xpriv = xpriv
	copy(id.xpub[:], xpriv.PublicKey().Bytes())
	return id, nil
}

// Public returns the public half of the identity.
func (id *Identity) Public() PublicIdentity { return id.pub }

// Sign returns the Ed25519 signature of msg.
func (id *Identity) Sign(msg []byte) []byte { return ed25519.Sign(id.priv, msg) }

// ECDH returns X25519(identity's X25519 private key, peer). It fails if the
// result is all zeros (peer is a low-order point).
func (id *Identity) ECDH(peer *ecdh.PublicKey) ([]byte, error) {
	out, err := id.xpriv.ECDH(peer)
	if err != nil {
		return nil, fmt.Errorf("identity ecdh: %w", ErrInvalidKey)
	}
	return out, nil
}

// MarshalBinary encodes the identity's private key: 0x01 || seed (33 bytes).
// The result is secret.
func (id *Identity) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, identityLen)
	b = append(b, identityVersion)
	return append(b, id.seed[:]...), nil
}

// UnmarshalBinary decodes an identity encoded by MarshalBinary.
func (id *Identity) UnmarshalBinary(b []byte) error {
	if len(b) != identityLen || b[0] != identityVersion {
		return fmt.Errorf("unmarshal identity: %w", ErrMalformed)
	}
	n, err := identityFromSeed([32]byte(b[1:]))
	if err != nil {
		return err
	}
	*id = *n
	return nil
}

// A PublicIdentity is an Ed25519 public key (RFC 8032 encoding).
type PublicIdentity [ed25519.PublicKeySize]byte

// Verify reports whether sig is a valid Ed25519 signature of msg by p. It
// rejects non-canonical and small-order keys (without the field arithmetic
// of Check: crypto/ed25519 rejects points off the curve itself).
func (p PublicIdentity) Verify(msg, sig []byte) bool {
	if len(sig) != ed25519.SignatureSize || !p.canonicalLargeOrder() {
		return false
	}
	return ed25519.Verify(p[:], msg, sig)
}

// smallOrderY are the little-endian y-coordinates of the Edwards25519
// points of order 1, 2, 4 and 8: 1, p-1, 0 and the two order-8 values.
var smallOrderY = [][32]byte{
	{1},
	{0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
	{},
	{0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a},
	{0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05},
}

// canonicalLargeOrder reports whether y < p and y is not the y-coordinate
// of a small-order point (which also excludes x = 0 with the sign bit set,
// since x = 0 only for y = 1 and y = p-1). It does not check that the point
// is on the curve.
func (p PublicIdentity) canonicalLargeOrder() bool {
	y := [32]byte(p)
	y[31] &= 0x7f
	// y >= p = 2^255-19 only if y[1:31] are all 0xff, y[31] = 0x7f and y[0] >= 0xed.
	high := y[31] == 0x7f
	for _, b := range y[1:31] {
		high = high && b == 0xff
	}
	if high && y[0] >= 0xed {
		return false
	}
	for _, s := range smallOrderY {
		if y == s {
			return false
		}
	}
	return true
}

// Canonical returns the canonical form of p: its encoding with the sign
// bit of x (bit 255) cleared. p and the sign-flipped encoding of -p have
// the same X25519 form, so PQXDH, the ratchet's AD and sealed sender cannot
// tell them apart: the key owner can present either (docs/protocol.md
// section 2.1). Key stores, contact lists and block lists by Canonical, or
// compare with Equal, never by the raw bytes.
func (p PublicIdentity) Canonical() PublicIdentity {
	p[31] &= 0x7f
	return p
}

// Equal reports whether p and q are the same identity as the session layer
// authenticates it: equal up to the sign bit of x (see Canonical).
func (p PublicIdentity) Equal(q PublicIdentity) bool {
	return p.Canonical() == q.Canonical()
}

// SignalKey returns 0x05 || the X25519 u-coordinate of p, the 33-byte
// public key form that Signal's fingerprints and associated data use. For an
// invalid key it returns 0x05 followed by zeros.
func (p PublicIdentity) SignalKey() [33]byte {
	var k [33]byte
	k[0] = 0x05
	if u, err := p.montgomery(); err == nil {
		copy(k[1:], u[:])
	}
	return k
}

// X25519 returns the X25519 form of p. It fails with ErrInvalidKey if p is
// not the canonical encoding of a point on the curve, or is a point of small
// order. (A torsion component of a large-order point is harmless: X25519
// clamping multiplies it away.)
func (p PublicIdentity) X25519() (*ecdh.PublicKey, error) {
	u, err := p.montgomery()
	if err != nil {
		return nil, err
	}
	k, err := ecdh.X25519().NewPublicKey(u[:])
	if err != nil {
		return nil, fmt.Errorf("identity x25519: %w", ErrInvalidKey)
	}
	return k, nil
}

// Check reports whether p is a canonical encoding of an Edwards25519 point
// that is not of small order.
func (p PublicIdentity) Check() error {
	_, err := p.montgomery()
	return err
}

// Field constants for the Edwards-to-Montgomery map. math/big is fast
// enough: the map runs once per key.
var (
	fieldP = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	// edwardsD = -121665/121666 mod p.
	edwardsD = func() *big.Int {
		d := new(big.Int).ModInverse(big.NewInt(121666), fieldP)
		d.Mul(d, big.NewInt(-121665))
		return d.Mod(d, fieldP)
	}()
	// smallOrderU are the u-coordinates, below p, of the Curve25519 points
	// of order 1, 2, 4 and 8 (and of the twist's order-4 point p-1).
	smallOrderU = func() []*big.Int {
		a, _ := new(big.Int).SetString("325606250916557431795983626356110631294008115727848805560023387167927233504", 10)
		b, _ := new(big.Int).SetString("39382357235489614581723060781553021112529911719440698176882885853963445705823", 10)
		return []*big.Int{big.NewInt(0), big.NewInt(1), new(big.Int).Sub(fieldP, big.NewInt(1)), a, b}
	}()
)

// montgomery maps p to its X25519 u-coordinate, little-endian, checking it.
func (p PublicIdentity) montgomery() ([32]byte, error) { return p.toMontgomery(true) }

// montgomeryOnCurve is montgomery for a key already known to decode to a
// point on the curve (crypto/ed25519 has accepted a signature by it, which
// it only does after decoding the point): it skips the on-curve test, the
// costliest part of the map, and keeps the other checks.
func (p PublicIdentity) montgomeryOnCurve() ([32]byte, error) { return p.toMontgomery(false) }

func (p PublicIdentity) toMontgomery(checkCurve bool) ([32]byte, error) {
	var u [32]byte
	var be [32]byte
	for i := range be {
		be[i] = p[31-i]
	}
	sign := be[0] >> 7
	be[0] &= 0x7f
	y := new(big.Int).SetBytes(be[:])
	if y.Cmp(fieldP) >= 0 {
		return u, fmt.Errorf("identity key: non-canonical: %w", ErrInvalidKey)
	}
	// u = (1+y)/(1-y); y = 1 is the identity point.
	oneMinus := new(big.Int).Sub(big.NewInt(1), y)
	oneMinus.Mod(oneMinus, fieldP)
	if oneMinus.Sign() == 0 {
		return u, fmt.Errorf("identity key: small order: %w", ErrInvalidKey)
	}
	if checkCurve {
		// On the curve: x^2 = (y^2-1) / (d*y^2+1) must be a square, and
		// the sign bit of x = 0 must be clear. d*y^2+1 is never 0 (-1/d is
		// not a square), and num/den is a square exactly when num*den is,
		// so one Jacobi symbol does without an inversion.
		y2 := new(big.Int).Mul(y, y)
		y2.Mod(y2, fieldP)
		num := new(big.Int).Sub(y2, big.NewInt(1))
		num.Mod(num, fieldP)
		den := y2.Mul(edwardsD, y2)
		den.Add(den, big.NewInt(1))
		if num.Sign() == 0 {
			if sign == 1 {
				return u, fmt.Errorf("identity key: non-canonical: %w", ErrInvalidKey)
			}
		} else if big.Jacobi(num.Mod(num.Mul(num, den), fieldP), fieldP) != 1 {
			return u, fmt.Errorf("identity key: not on curve: %w", ErrInvalidKey)
		}
	}
	uu := new(big.Int).Add(big.NewInt(1), y)
	uu.Mul(uu, oneMinus.ModInverse(oneMinus, fieldP))
	uu.Mod(uu, fieldP)
	for _, s := range smallOrderU {
		if uu.Cmp(s) == 0 {
			return u, fmt.Errorf("identity key: small order: %w", ErrInvalidKey)
		}
	}
	uu.FillBytes(be[:])
	for i := range u {
		u[i] = be[31-i]
	}
	return u, nil
}
