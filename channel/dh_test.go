package channel

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/flynn/noise"
)

// TestX25519 checks that the channel's DH function gives noise.DH25519's
// results: the same key pair from the same 32 random bytes, the same
// shared secrets for fresh, repeated and static keys, and an error for a
// low-order public key.
func TestX25519(t *testing.T) {
	seed := make([]byte, 64)
	rand.Read(seed)
	static, err := GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 { // the second round finds the static key kept
		d := &x25519{static: static.Private}
		got, err := d.GenerateKeypair(bytes.NewReader(seed))
		if err != nil {
			t.Fatal(err)
		}
		want, err := noise.DH25519.GenerateKeypair(bytes.NewReader(seed))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Private, want.Private) || !bytes.Equal(got.Public, want.Public) {
			t.Fatalf("round %d: key pair differs from noise.DH25519's", round)
		}
		peer, _ := noise.DH25519.GenerateKeypair(bytes.NewReader(seed[32:]))
		for _, priv := range [][]byte{got.Private, got.Private, static.Private[:], static.Private[:]} {
			a, err := d.DH(priv, peer.Public)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := noise.DH25519.DH(priv, peer.Public)
			if !bytes.Equal(a, b) {
				t.Fatalf("round %d: shared secret differs from noise.DH25519's", round)
			}
		}
		if len(d.keys) != 2 {
			t.Fatalf("round %d: %d private keys made, want 2 (the ephemeral and the static, each once)", round, len(d.keys))
		}
		if _, err := d.DH(got.Private, make([]byte, 32)); err == nil {
			t.Fatal("a low-order public key gave no error")
		}
	}
	if s := lastStatic.Load(); s == nil || s.raw != static.Private {
		t.Fatal("the static key was not kept for the next handshake")
	}
}
