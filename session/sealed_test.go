package session

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
)

func sealedParties(t testing.TB) (alice, bob, carol *Identity) {
	t.Helper()
	var ids [3]*Identity
	for i, name := range []string{"sealed alice", "sealed bob", "sealed carol"} {
		id, err := NewIdentity(extrasDetRand(name))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	return ids[0], ids[1], ids[2]
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	alice, bob, _ := sealedParties(t)
	for _, n := range []int{0, 1, 200, 255, 256, 5000, 70000} {
		inner := detBytes(fmt.Sprint("inner", n), n)
		env, err := Seal(extrasDetRand(fmt.Sprint("eph", n)), alice, bob.Public(), 7, inner)
		if err != nil {
			t.Fatal(err)
		}
		if want := SealedOverhead + paddedLen(1+n); len(env) != want {
			t.Errorf("inner %d: envelope %d bytes, want %d", n, len(env), want)
		}
		from, ct, got, err := Open(bob, env)
		if err != nil || from != alice.Public() || ct != 7 || !bytes.Equal(got, inner) {
			t.Errorf("inner %d: open = %x, %d, %d bytes, %v", n, from[:4], ct, len(got), err)
		}
	}
}

// TestSealedHidesSender checks the relay-visible bytes: no form of the
// sender's key, and no plaintext.
func TestSealedHidesSender(t *testing.T) {
	t.Parallel()
	alice, bob, _ := sealedParties(t)
	inner := []byte("meet at the harbour at nine, bring the documents")
	env, err := Seal(extrasDetRand("hide"), alice, bob.Public(), 1, inner)
	if err != nil {
		t.Fatal(err)
	}
	ax, err := alice.Public().X25519()
	if err != nil {
		t.Fatal(err)
	}
	pub := alice.Public()
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"ed25519 key", pub[:]},
		{"x25519 key", ax.Bytes()},
		{"key prefix", pub[:8]},
		{"x25519 prefix", ax.Bytes()[:8]},
		{"plaintext", inner[:8]},
	} {
		if bytes.Contains(env, c.b) {
			t.Errorf("envelope contains the sender's %s", c.name)
		}
	}
}

func TestSealedBuckets(t *testing.T) {
	t.Parallel()
	alice, bob, _ := sealedParties(t)
	lengths := map[int]map[int]bool{} // bucket -> envelope lengths seen
	for _, n := range []int{0, 1, 100, 254, 255, 300, 511, 1000, 1022, 2000, 3000, 4094} {
		env, err := Seal(extrasDetRand("bucket"), alice, bob.Public(), 1, make([]byte, n))
		if err != nil {
			t.Fatal(err)
		}
		b := paddedLen(n + 1)
		if lengths[b] == nil {
			lengths[b] = map[int]bool{}
		}
		lengths[b][len(env)] = true
	}
	for b, seen := range lengths {
		if len(seen) != 1 {
			t.Errorf("bucket %d: envelope lengths %v, want one", b, seen)
		}
	}
	if len(lengths) != 5 {
		t.Errorf("%d buckets, want 5 (256, 512, 1024, 2048, 4096)", len(lengths))
	}
}

func TestSealedRejects(t *testing.T) {
	t.Parallel()
	alice, bob, carol := sealedParties(t)
	env, err := Seal(extrasDetRand("reject"), alice, bob.Public(), 3, []byte("hello bob"))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("every byte", func(t *testing.T) {
		t.Parallel()
		for i := range env {
			b := append([]byte(nil), env...)
			b[i] ^= 0x01
			if _, _, _, err := Open(bob, b); err == nil {
				t.Fatalf("flip at byte %d accepted", i)
			}
		}
	})
	t.Run("third party", func(t *testing.T) {
		t.Parallel()
		if _, _, _, err := Open(carol, env); !errors.Is(err, ErrDecrypt) {
			t.Errorf("carol opened bob's envelope: %v", err)
		}
	})
	t.Run("spoofed sender", func(t *testing.T) {
		t.Parallel()
		// Carol claims to be Alice; she can only do her own agreement.
		forged, err := seal(extrasDetRand("spoof"), alice.Public(), carol.ECDH, bob.Public(), 3, []byte("it's alice, honest"))
		if err != nil {
			t.Fatal(err)
		}
		if from, _, _, err := Open(bob, forged); !errors.Is(err, ErrDecrypt) {
			t.Errorf("spoofed envelope opened as %x, %v", from[:4], err)
		}
		// Carol grafts Alice's sender block onto her own envelope.
		own, _ := Seal(extrasDetRand("graft"), carol, bob.Public(), 3, []byte("hello bob"))
		copy(own[33:sealedHeaderLen], env[33:sealedHeaderLen])
		if _, _, _, err := Open(bob, own); !errors.Is(err, ErrDecrypt) {
			t.Errorf("grafted sender block accepted: %v", err)
		}
	})
	t.Run("layout", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			name string
			b    []byte
		}{
			{"truncated", env[:len(env)-1]},
			{"extended", append(append([]byte(nil), env...), 0)},
			{"short", env[:100]},
			{"version", append([]byte{2}, env[1:]...)},
		} {
			if _, _, _, err := Open(bob, c.b); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: got %v, want ErrMalformed", c.name, err)
			}
		}
	})
	t.Run("bad recipient key", func(t *testing.T) {
		t.Parallel()
		var bad PublicIdentity
		if _, err := Seal(extrasDetRand("bad"), alice, bad, 1, nil); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("sealed to a low-order key: %v", err)
		}
	})
}

// sealedVector is testdata/extras-sealed.json.
type sealedVector struct {
	Description   string `json:"description"`
	SenderSeed    string `json:"sender_seed"`    // identity = NewIdentity(extrasDetRand(seed))
	RecipientSeed string `json:"recipient_seed"` // likewise
	EphemeralSeed string `json:"ephemeral_seed"` // e = first 32 bytes of extrasDetRand(seed)
	Sender        string `json:"sender_identity"`
	Recipient     string `json:"recipient_identity"`
	ContentType   byte   `json:"content_type"`
	Inner         string `json:"inner"`
	Envelope      string `json:"envelope"`
}

type sealedVectors struct {
	Cases []sealedVector `json:"cases"`
}

func genSealedVectors(t *testing.T) sealedVectors {
	var v sealedVectors
	for i, inner := range []string{"", "68656c6c6f", hex.EncodeToString(detBytes("sealed vector inner", 600))} {
		c := sealedVector{
			Description:   "Sealed sender envelope (docs/protocol.md section 3.2). Regenerate: go test ./session -run ExtrasVectors -update",
			SenderSeed:    "sealed alice",
			RecipientSeed: "sealed bob",
			EphemeralSeed: fmt.Sprint("sealed vector ephemeral ", i),
			ContentType:   byte(i + 1),
			Inner:         inner,
		}
		alice, _ := NewIdentity(extrasDetRand(c.SenderSeed))
		bob, _ := NewIdentity(extrasDetRand(c.RecipientSeed))
		ap, bp := alice.Public(), bob.Public()
		c.Sender, c.Recipient = hex.EncodeToString(ap[:]), hex.EncodeToString(bp[:])
		env, err := Seal(extrasDetRand(c.EphemeralSeed), alice, bob.Public(), c.ContentType, unhex(t, inner))
		if err != nil {
			t.Fatal(err)
		}
		c.Envelope = hex.EncodeToString(env)
		v.Cases = append(v.Cases, c)
	}
	return v
}

func verifySealedVectors(t *testing.T, v sealedVectors) {
	for _, c := range v.Cases {
		bob, _ := NewIdentity(extrasDetRand(c.RecipientSeed))
		from, ct, inner, err := Open(bob, unhex(t, c.Envelope))
		if err != nil || hex.EncodeToString(from[:]) != c.Sender || ct != c.ContentType || hex.EncodeToString(inner) != c.Inner {
			t.Errorf("%s: open = %x, %d, %x, %v", c.EphemeralSeed, from, ct, inner, err)
		}
	}
}

func FuzzOpen(f *testing.F) {
	for _, c := range loadExtrasVectors[sealedVectors](f, "sealed").Cases {
		f.Add(unhex(f, c.Envelope))
	}
	_, bob, _ := sealedParties(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if e, err := parseSealed(b); err == nil {
			if got := e.marshal(); !bytes.Equal(got, b) {
				t.Fatalf("round trip: %x -> %x", b, got)
			}
		}
		Open(bob, b)
	})
}

func ExampleSeal() {
	alice, _ := NewIdentity(rand.Reader)
	bob, _ := NewIdentity(rand.Reader)

	// inner would be a ratchet message from Alice's session with Bob.
	env, _ := Seal(rand.Reader, alice, bob.Public(), 1, []byte("ratchet message"))

	from, contentType, inner, err := Open(bob, env)
	fmt.Println(len(env), from == alice.Public(), contentType, string(inner), err)
	// Output: 353 true 1 ratchet message <nil>
}

// FuzzSealRoundTrip: whatever the content, Open(Seal(x)) = x and the
// envelope is a bucket long.
func FuzzSealRoundTrip(f *testing.F) {
	f.Add(byte(1), []byte("hello"))
	f.Add(byte(0), []byte{})
	f.Add(byte(0xff), bytes.Repeat([]byte{0x80, 0}, 300))
	alice, bob, _ := sealedParties(f)
	f.Fuzz(func(t *testing.T, ct byte, inner []byte) {
		env, err := Seal(extrasDetRand("fuzz seal"), alice, bob.Public(), ct, inner)
		if err != nil {
			t.Fatal(err)
		}
		if !isBucket(len(env) - SealedOverhead) {
			t.Fatalf("envelope of %d bytes is not a bucket plus overhead", len(env))
		}
		from, gotCT, got, err := Open(bob, env)
		if err != nil || from != alice.Public() || gotCT != ct || !bytes.Equal(got, inner) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
