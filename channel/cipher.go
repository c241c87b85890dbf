package channel

import (
	"crypto/cipher"
	"encoding/binary"

	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
)

// chachaPolyFunc is Noise's ChaChaPoly cipher function: ChaCha20-Poly1305
// (RFC 8439) with the 96-bit nonce 32 zero bits || n as 64-bit little
// endian. It computes what noise.CipherChaChaPoly computes (the published
// vectors run through it), but builds the nonce in the cipher instead of
// allocating one per record.
type chachaPolyFunc struct{}

var _ noise.CipherFunc = chachaPolyFunc{}

func (chachaPolyFunc) CipherName() string { return "ChaChaPoly" }

func (chachaPolyFunc) Cipher(k [32]byte) noise.Cipher {
	a, err := chacha20poly1305.New(k[:])
	if err != nil {
		panic(err) // unreachable: the key has the right size
	}
	return &chachaPoly{aead: a}
}

// chachaPoly is one keyed ChaChaPoly cipher. Like the noise.CipherState
// that holds it, it is used by one goroutine at a time.
type chachaPoly struct {
	aead  cipher.AEAD
	nonce [chacha20poly1305.NonceSize]byte // bytes 0-3 stay zero
}

var _ noise.Cipher = (*chachaPoly)(nil)

func (c *chachaPoly) nonceOf(n uint64) []byte {
	binary.LittleEndian.PutUint64(c.nonce[4:], n)
	return c.nonce[:]
}

func (c *chachaPoly) Encrypt(out []byte, n uint64, ad, plaintext []byte) []byte {
	return c.aead.Seal(out, c.nonceOf(n), plaintext, ad)
}

func (c *chachaPoly) Decrypt(out []byte, n uint64, ad, ciphertext []byte) ([]byte, error) {
	return c.aead.Open(out, c.nonceOf(n), ciphertext, ad)
}
