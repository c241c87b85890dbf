package obfs

import (
	"crypto/ecdh"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// Elligator 2 over Curve25519 (Bernstein, Hamburg, Krasnova, Lange,
// "Elligator: elliptic-curve points indistinguishable from uniform random
// strings", CCS 2013; the forward map as in RFC 9380 section 6.7.1 with
// Z = 2), written on filippo.io/edwards25519's field arithmetic.
// docs/transports.md section 4.3 is the specification.

// reprLen is the length of a representative on the wire.
const reprLen = 32

var (
	feA    = new(field.Element).Mult32(new(field.Element).One(), 486662)
	feNegA = new(field.Element).Negate(feA)
	feOne  = new(field.Element).One()
	feTwo  = new(field.Element).Add(feOne, feOne)
	// lowOrder is a point of order 8 of edwards25519: adding a random
	// multiple of it to a public key spreads public keys over the whole
	// curve, as Elligator's preimages of random strings are (a key in the
	// prime-order subgroup alone would be a distinguisher).
	lowOrder = mustPoint("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")
)

func mustPoint(h string) *edwards25519.Point {
	b, err := hex.DecodeString(h)
	if err != nil {
		panic("obfs: bad low-order point constant")
	}
	p, err := new(edwards25519.Point).SetBytes(b)
	if err != nil {
		panic("obfs: bad low-order point constant")
	}
	return p
}

// decodeRepr maps a representative to the Montgomery u-coordinate of a
// Curve25519 point: the top bit of r is ignored (it is random on the wire),
// the rest is read as a field element (non-canonical values too), and
// u = w if w^3 + A w^2 + w is a square, else -w - A, where w = -A/(1+2r^2).
// Every 32-byte string decodes to a point.
func decodeRepr(repr *[reprLen]byte) [32]byte {
	var b [32]byte
	copy(b[:], repr[:])
	b[31] &= 0x7f
	r, _ := new(field.Element).SetBytes(b[:]) // cannot fail on 32 bytes
	d := new(field.Element).Square(r)
	d.Multiply(d, feTwo).Add(d, feOne) // 1 + 2r^2, never 0: -1/2 is not a square
	w := new(field.Element).Invert(d)
	w.Multiply(w, feNegA) // -A/(1+2r^2)
	// f = w^3 + A w^2 + w = w (w (w + A) + 1)
	f := new(field.Element).Add(w, feA)
	f.Multiply(f, w).Add(f, feOne).Multiply(f, w)
	_, isSquare := new(field.Element).SqrtRatio(f, feOne)
	alt := new(field.Element).Subtract(feNegA, w) // -w - A
	u := new(field.Element).Select(w, alt, isSquare)
	var out [32]byte
	copy(out[:], u.Bytes())
	return out
}

// encodeU returns a representative of the point with u-coordinate u, if
// it has one (about half of all points do): one of the two field
// elements r with decodeRepr(r) = u, picked by sel's bit 0, negated by
// sel's bit 1, with the top bit of the last byte set from sel's bit 2. A
// uniformly random sel makes representatives of uniformly random points
// uniform 256-bit strings.
func encodeU(u *[32]byte, sel byte) (repr [reprLen]byte, ok bool) {
	fu, err := new(field.Element).SetBytes(u[:])
	if err != nil {
		return repr, false
	}
	upa := new(field.Element).Add(fu, feA) // u + A
	if fu.Equal(new(field.Element).Zero()) == 1 || upa.Equal(new(field.Element).Zero()) == 1 {
		return repr, false
	}
	// r^2 = -u / (2(u+A)) (branch w = -u-A) or -(u+A) / (2u) (branch w = u).
	num, den := new(field.Element), new(field.Element)
	if sel&1 == 0 {
		num.Negate(fu)
		den.Multiply(upa, feTwo)
	} else {
		num.Negate(upa)
		den.Multiply(fu, feTwo)
	}
	r, isSquare := new(field.Element).SqrtRatio(num, den)
	if isSquare == 0 {
		return repr, false
	}
	if sel&2 != 0 {
		r.Negate(r)
	}
	copy(repr[:], r.Bytes())
	repr[31] |= (sel & 4) << 5
	return repr, true
}

// keyPair is an X25519 key pair whose public key has a representative.
type keyPair struct {
	priv *ecdh.PrivateKey
	pub  [32]byte // u-coordinate of [priv]B + [t]T8, t random in 0..7
	repr [reprLen]byte
}

// newKeyPair draws private keys from rnd until one's public key, with a
// random low-order component added, has a representative; about two draws
// on average. The low-order component does not change X25519 results: the
// peer's clamped scalar is a multiple of 8.
func newKeyPair(rnd io.Reader) (*keyPair, error) {
	var seed [33]byte
	for range 128 {
		if _, err := io.ReadFull(rnd, seed[:]); err != nil {
			return nil, fmt.Errorf("read key randomness: %w", err)
		}
		if kp, ok := keyPairFrom(&seed); ok {
			return kp, nil
		}
	}
	return nil, errors.New("generate key pair: no representable key in 128 draws")
}

// keyPairFrom makes the key pair of seed: the private key is its first 32
// bytes; byte 32 picks the low-order component (bits 0-2) and the
// representative (bits 3-5, see encodeU). ok is false if the public key
// has no representative.
func keyPairFrom(seed *[33]byte) (kp *keyPair, ok bool) {
	s, err := new(edwards25519.Scalar).SetBytesWithClamping(seed[:32])
	if err != nil {
		return nil, false
	}
	p := new(edwards25519.Point).ScalarBaseMult(s)
	t := new(edwards25519.Point).Set(edwards25519.NewIdentityPoint())
	for range seed[32] & 7 {
		t.Add(t, lowOrder)
	}
	p.Add(p, t)
	var u [32]byte
	copy(u[:], p.BytesMontgomery())
	repr, ok := encodeU(&u, seed[32]>>3)
	if !ok {
		return nil, false
	}
	priv, err := ecdh.X25519().NewPrivateKey(seed[:32])
	if err != nil {
		return nil, false
	}
	return &keyPair{priv: priv, pub: u, repr: repr}, true
}

// x25519 computes the shared secret of priv and the peer's u-coordinate;
// it fails on an all-zero result (a low-order peer key).
func x25519(priv *ecdh.PrivateKey, peer []byte) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return nil, err
	}
	return priv.ECDH(pub)
}
