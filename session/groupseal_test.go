package session

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
)

// detRand is a deterministic reader for these tests: SHA-256 blocks of a
// counter.
type detRand struct{ n byte }

func (r *detRand) Read(p []byte) (int, error) {
	for i := range p {
		if i%32 == 0 {
			r.n++
		}
		p[i] = sha256.Sum256([]byte{r.n})[i%32]
	}
	return len(p), nil
}

// TestGroupEnvelopeVector pins the layout: the envelope of a fixed key,
// nonce and inner message, computed from the text of docs/protocol.md
// 3.8 (seal key, hint key and hint by HKDF and HMAC here; XChaCha20-
// Poly1305 by x/crypto).
func TestGroupEnvelopeVector(t *testing.T) {
	g := NewGroupKeys([32]byte{1, 2, 3})
	env, err := g.SealGroup(&detRand{}, []byte("hello, group"))
	if err != nil {
		t.Fatal(err)
	}
	if len(env) != GroupEnvelopeOverhead+256 || env[0] != 0x02 {
		t.Fatalf("envelope of %d bytes, version %d", len(env), env[0])
	}
	// HMAC-SHA-256(HKDF(ikm = key, info = "Ferry group hint v1"), nonce)[0:8]
	// for nonce = SHA-256(0x01)[0:24], computed independently with
	// Python's hmac and hashlib.
	const want = "11467b48aa438b37"
	if got := hex.EncodeToString(env[25:33]); got != want {
		t.Errorf("hint %s, want %s", got, want)
	}
	inner, err := g.OpenGroup(env)
	if err != nil || string(inner) != "hello, group" {
		t.Fatalf("OpenGroup: %q, %v", inner, err)
	}
}

func TestGroupEnvelope(t *testing.T) {
	g, other := NewGroupKeys([32]byte{1}), NewGroupKeys([32]byte{2})
	env, _ := g.SealGroup(&detRand{}, bytes.Repeat([]byte{7}, 300))
	if !g.Matches(env) || other.Matches(env) {
		t.Fatal("hint matching is wrong")
	}
	if _, err := other.OpenGroup(env); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("another key: %v", err)
	}
	for i := range []int{0, 1, 30, len(env) - 1} {
		bad := bytes.Clone(env)
		bad[i] ^= 1
		if _, err := g.OpenGroup(bad); err == nil {
			t.Errorf("flipped byte %d: opened", i)
		}
	}
	if _, err := g.OpenGroup(env[:len(env)-1]); !errors.Is(err, ErrMalformed) {
		t.Errorf("truncated: %v", err)
	}
	env2, _ := g.SealGroup(&detRand{n: 9}, bytes.Repeat([]byte{7}, 300))
	if bytes.Equal(env[1:33], env2[1:33]) {
		t.Error("two envelopes share nonce and hint")
	}
}

// FuzzOpenGroup: arbitrary bytes never open under a key unless sealed
// with it, and never panic.
func FuzzOpenGroup(f *testing.F) {
	g := NewGroupKeys([32]byte{1})
	env, _ := g.SealGroup(&detRand{}, []byte("seed"))
	f.Add(env)
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, b []byte) {
		inner, err := g.OpenGroup(b)
		if err == nil && !bytes.Equal(b, env) {
			// Only an envelope made with the key opens (the seed).
			again, _ := g.SealGroup(&detRand{}, inner)
			if !bytes.Equal(again, b) {
				t.Fatalf("opened a forgery: %x", b)
			}
		}
	})
}
