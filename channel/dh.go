package channel

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"io"
	"sync/atomic"

	"github.com/flynn/noise"
)

// x25519 is Noise's 25519 DH function for one handshake.
//
// noise.DH25519 goes through x/crypto/curve25519, which makes a
// crypto/ecdh private key from the raw bytes at every use, and crypto/ecdh
// computes the public key of every private key it makes: a second scalar
// multiplication in each DH and a third in key generation, ten in an IK
// handshake that needs five. Under a flood of handshakes that doubled the
// relay's cost per connection (docs/benchmarks.md, "The relay under
// attack"). x25519 makes each private key once per handshake, and keeps
// the static key's across handshakes while it stays the same (a relay's
// never changes). The results are those of noise.DH25519 (TestX25519),
// and the published Noise vectors run through it.
type x25519 struct {
	static [32]byte // the handshake's static private key
	keys   []x25519Key
}

type x25519Key struct {
	raw [32]byte
	key *ecdh.PrivateKey
}

// lastStatic is the static key most recently made, kept for the next
// handshake with the same static key.
var lastStatic atomic.Pointer[x25519Key]

// GenerateKeypair implements noise.DHFunc: 32 bytes of rng (crypto/rand if
// nil) make the private key, as noise.DH25519's.
func (d *x25519) GenerateKeypair(rng io.Reader) (noise.DHKey, error) {
	if rng == nil {
		rng = rand.Reader
	}
	var raw [32]byte
	if _, err := io.ReadFull(rng, raw[:]); err != nil {
		return noise.DHKey{}, err
	}
	k, err := d.key(raw[:])
	if err != nil {
		return noise.DHKey{}, err
	}
	return noise.DHKey{Private: raw[:], Public: k.PublicKey().Bytes()}, nil
}

// DH implements noise.DHFunc. A low-order public key is an error, as in
// noise.DH25519.
func (d *x25519) DH(priv, pub []byte) ([]byte, error) {
	k, err := d.key(priv)
	if err != nil {
		return nil, err
	}
	p, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return k.ECDH(p)
}

// DHLen implements noise.DHFunc.
func (*x25519) DHLen() int { return 32 }

// DHName implements noise.DHFunc.
func (*x25519) DHName() string { return "25519" }

// key returns the crypto/ecdh key of raw, making it once.
func (d *x25519) key(raw []byte) (*ecdh.PrivateKey, error) {
	for _, k := range d.keys {
		if subtle.ConstantTimeCompare(k.raw[:], raw) == 1 {
			return k.key, nil
		}
	}
	static := subtle.ConstantTimeCompare(d.static[:], raw) == 1
	if s := lastStatic.Load(); static && s != nil && subtle.ConstantTimeCompare(s.raw[:], raw) == 1 {
		d.keys = append(d.keys, *s)
		return s.key, nil
	}
	k, err := ecdh.X25519().NewPrivateKey(raw)
	if err != nil {
		return nil, err
	}
	made := x25519Key{key: k}
	copy(made.raw[:], raw)
	d.keys = append(d.keys, made)
	if static {
		lastStatic.Store(&made)
	}
	return k, nil
}
