package ranking

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"errors"
	"io"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// XEdDSA (Signal, "The XEdDSA and VXEdDSA Signature Schemes", revision 1,
// 2016-10-20, section 2.5): an Ed25519-compatible signature made with an
// X25519 private key, so that the relay's static key, which every link
// carries, can certify the ranking key. A signature verifies with
// crypto/ed25519 under the Edwards form of the Montgomery public key
// (sign bit 0).

// hash1Prefix is 2^256 - 1 - 1 in 32 little-endian bytes: XEdDSA's hash_1
// domain separator.
var hash1Prefix = append([]byte{0xfe}, bytes.Repeat([]byte{0xff}, 31)...)

// xeddsaSign signs msg with the X25519 private key priv, with 64 bytes of
// fresh randomness from rnd.
func xeddsaSign(priv [32]byte, msg []byte, rnd io.Reader) ([64]byte, error) {
	var sig [64]byte
	var z [64]byte
	if _, err := io.ReadFull(rnd, z[:]); err != nil {
		return sig, err
	}
	k, err := new(edwards25519.Scalar).SetBytesWithClamping(priv[:])
	if err != nil {
		return sig, err
	}
	// calculate_key_pair: A is k·B with its sign bit cleared, and a the
	// scalar whose multiple of B is A.
	e := new(edwards25519.Point).ScalarBaseMult(k).Bytes()
	a := k
	if e[31]&0x80 != 0 {
		a = new(edwards25519.Scalar).Negate(k)
	}
	pub := append([]byte(nil), e...)
	pub[31] &= 0x7f
	h := sha512.New()
	h.Write(hash1Prefix)
	h.Write(a.Bytes())
	h.Write(msg)
	h.Write(z[:])
	r, err := new(edwards25519.Scalar).SetUniformBytes(h.Sum(nil))
	if err != nil {
		return sig, err
	}
	rb := new(edwards25519.Point).ScalarBaseMult(r).Bytes()
	h.Reset()
	h.Write(rb)
	h.Write(pub)
	h.Write(msg)
	c, err := new(edwards25519.Scalar).SetUniformBytes(h.Sum(nil))
	if err != nil {
		return sig, err
	}
	s := new(edwards25519.Scalar).MultiplyAdd(c, a, r)
	copy(sig[:32], rb)
	copy(sig[32:], s.Bytes())
	return sig, nil
}

// edwardsKey returns the Ed25519 public key that verifies XEdDSA
// signatures of the X25519 public key u: y = (u - 1) / (u + 1), sign 0.
func edwardsKey(u [32]byte) (ed25519.PublicKey, error) {
	u[31] &= 0x7f // u mod 2^255
	var fu field.Element
	if _, err := fu.SetBytes(u[:]); err != nil {
		return nil, err
	}
	if !bytes.Equal(fu.Bytes(), u[:]) {
		return nil, errors.New("x25519 public key not below p")
	}
	one := new(field.Element).One()
	den := new(field.Element).Add(&fu, one)
	if den.Equal(new(field.Element).Zero()) == 1 {
		return nil, errors.New("x25519 public key has no Edwards form")
	}
	y := new(field.Element).Subtract(&fu, one)
	y.Multiply(y, new(field.Element).Invert(den))
	pub := y.Bytes() // sign bit 0
	if _, err := new(edwards25519.Point).SetBytes(pub); err != nil {
		return nil, err
	}
	return ed25519.PublicKey(pub), nil
}

// xeddsaVerify reports whether sig is an XEdDSA signature of msg by the
// X25519 public key u.
func xeddsaVerify(u [32]byte, msg []byte, sig []byte) bool {
	pub, err := edwardsKey(u)
	if err != nil || len(sig) != 64 {
		return false
	}
	return ed25519.Verify(pub, msg, sig)
}
