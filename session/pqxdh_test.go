package session

import (
	"bytes"
	"crypto/mlkem"
	"crypto/mlkem/mlkemtest"
	"crypto/rand"
	"errors"
	"io"
	"testing"
)

func init() {
	// Derandomized ML-KEM encapsulation for the deterministic test reader
	// (docs/protocol.md section 2.9); the production path for any other
	// reader, so tests using crypto/rand exercise it.
	real := encapsulate
	encapsulate = func(ek *mlkem.EncapsulationKey768, r io.Reader) ([]byte, []byte, error) {
		tr, ok := r.(*testRand)
		if !ok {
			return real(ek, r)
		}
		var m [32]byte
		if _, err := io.ReadFull(tr, m[:]); err != nil {
			return nil, nil, err
		}
		return mlkemtest.Encapsulate768(ek, m[:])
	}
}

// party is one test user: an identity and its prekeys.
type party struct {
	id *Identity
	ps *PrekeySet
}

func newParty(t testing.TB, r io.Reader, oneTime int) *party {
	t.Helper()
	id, err := NewIdentity(r)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := GeneratePrekeys(r, id, oneTime)
	if err != nil {
		t.Fatal(err)
	}
	return &party{id, ps}
}

// newPair sets up a session between two new parties, using one-time
// prekeys, and delivers the first message "hello".
func newPair(t testing.TB, r io.Reader) (alice, bob *Session) {
	t.Helper()
	a := newParty(t, r, 2)
	b := newParty(t, r, 2)
	alice, err := Initiate(r, a.id, b.ps.Bundle(b.id.Public(), true))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := alice.Encrypt([]byte("hello"), nil)
	if err != nil {
		t.Fatal(err)
	}
	bob, pt, _, err := Respond(r, b.id, b.ps, msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(pt) != "hello" {
		t.Fatalf("first message: got %q, want %q", pt, "hello")
	}
	return alice, bob
}

func TestPQXDH(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		oneTime bool
		rand    func() io.Reader
	}{
		{"one-time prekeys", true, func() io.Reader { return newTestRand("pqxdh one-time") }},
		{"last resort", false, func() io.Reader { return newTestRand("pqxdh last resort") }},
		{"crypto/rand", true, func() io.Reader { return rand.Reader }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := tt.rand()
			a := newParty(t, r, 3)
			b := newParty(t, r, 3)
			bundle := b.ps.Bundle(b.id.Public(), tt.oneTime)
			alice, err := Initiate(r, a.id, bundle)
			if err != nil {
				t.Fatal(err)
			}
			m1, _ := alice.Encrypt([]byte("one"), []byte("ad"))
			m2, _ := alice.Encrypt([]byte("two"), []byte("ad"))
			if !IsInitialMessage(m1) || !IsInitialMessage(m2) {
				t.Fatal("messages before a reply are not initial messages")
			}
			// The second message arrives first: it sets up the session too.
			bob, pt, used, err := Respond(r, b.id, b.ps, m2, []byte("ad"))
			if err != nil {
				t.Fatal(err)
			}
			if string(pt) != "two" {
				t.Fatalf("got %q, want %q", pt, "two")
			}
			if bob.RemoteIdentity() != a.id.Public() || alice.RemoteIdentity() != b.id.Public() {
				t.Fatal("remote identities do not match")
			}
			x, k := b.ps.OneTimeCount()
			if tt.oneTime {
				if !used.HasOneTime || used.OneTime != bundle.OneTimePrekey.ID || used.KEM != bundle.KEMPrekey.ID || used.LastResort {
					t.Fatalf("used = %+v, want the bundle's one-time prekeys", used)
				}
				if x != 2 || k != 2 {
					t.Fatalf("one-time prekeys left: %d, %d, want 2, 2", x, k)
				}
			} else {
				if used.HasOneTime || !used.LastResort || used.KEM != bundle.KEMPrekey.ID {
					t.Fatalf("used = %+v, want the last-resort prekey", used)
				}
				if x != 3 || k != 3 {
					t.Fatalf("one-time prekeys left: %d, %d, want 3, 3", x, k)
				}
			}
			// The first initial message is a retransmission in the same
			// session: bob's Session decrypts it.
			if pt, err := bob.Decrypt(m1, []byte("ad")); err != nil || string(pt) != "one" {
				t.Fatalf("retransmitted initial message: got %q, %v", pt, err)
			}
			reply, _ := bob.Encrypt([]byte("three"), nil)
			if IsInitialMessage(reply) {
				t.Fatal("responder sent an initial message")
			}
			if pt, err := alice.Decrypt(reply, nil); err != nil || string(pt) != "three" {
				t.Fatalf("reply: got %q, %v", pt, err)
			}
			m4, _ := alice.Encrypt([]byte("four"), nil)
			if IsInitialMessage(m4) {
				t.Fatal("initiator still sends initial messages after a reply")
			}
			if pt, err := bob.Decrypt(m4, nil); err != nil || string(pt) != "four" {
				t.Fatalf("after reply: got %q, %v", pt, err)
			}
			// A second session from the same initial message: with one-time
			// prekeys it fails (they are gone); with the last resort it works.
			_, _, _, err = Respond(r, b.id, b.ps, m1, []byte("ad"))
			if tt.oneTime && !errors.Is(err, ErrUnknownPrekey) {
				t.Fatalf("replayed initial message: got %v, want ErrUnknownPrekey", err)
			}
			if !tt.oneTime && err != nil {
				t.Fatalf("last-resort initial message again: %v", err)
			}
		})
	}
}

func TestInitiateRejectsForgedBundle(t *testing.T) {
	t.Parallel()
	r := newTestRand("forged bundle")
	a := newParty(t, r, 1)
	b := newParty(t, r, 1)
	m := newParty(t, r, 1) // the relay's own keys
	good := b.ps.Bundle(b.id.Public(), true)
	mb := m.ps.Bundle(m.id.Public(), true)
	mlr := m.ps.Bundle(m.id.Public(), false)
	tests := []struct {
		name   string
		mutate func(*Bundle)
		want   error
	}{
		{"swapped signed prekey", func(x *Bundle) { x.SignedPrekey = mb.SignedPrekey }, ErrBadSignature},
		{"swapped one-time prekey", func(x *Bundle) { x.OneTimePrekey = mb.OneTimePrekey }, ErrBadSignature},
		{"swapped kem prekey", func(x *Bundle) { x.KEMPrekey = mb.KEMPrekey }, ErrBadSignature},
		{"kem prekey with id changed", func(x *Bundle) { x.KEMPrekey.ID++ }, ErrBadSignature},
		{"one-time kem shown as last resort", func(x *Bundle) { x.KEMPrekey.LastResort = true }, ErrBadSignature},
		{"signed prekey as one-time", func(x *Bundle) { p := x.SignedPrekey; x.OneTimePrekey = &p }, ErrBadSignature},
		{"last resort of another identity", func(x *Bundle) { x.KEMPrekey = mlr.KEMPrekey }, ErrBadSignature},
		{"invalid identity", func(x *Bundle) { x.Identity = PublicIdentity{1} }, ErrInvalidKey},
		// Canonical and not of small order, but off the curve: only the
		// full check, run after a signature fails, tells it apart.
		{"identity off the curve", func(x *Bundle) { x.Identity = PublicIdentity{2} }, ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			x := *good
			o := *good.OneTimePrekey
			x.OneTimePrekey = &o
			tt.mutate(&x)
			if _, err := Initiate(newTestRand(tt.name), a.id, &x); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestRespondFailureKeepsPrekeys(t *testing.T) {
	t.Parallel()
	r := newTestRand("respond failure")
	a := newParty(t, r, 1)
	b := newParty(t, r, 1)
	alice, _ := Initiate(r, a.id, b.ps.Bundle(b.id.Public(), true))
	msg, _ := alice.Encrypt([]byte("hi"), nil)
	before, _ := b.ps.MarshalBinary()
	for _, bad := range mutations(msg) {
		if _, _, _, err := Respond(r, b.id, b.ps, bad, nil); err == nil {
			t.Fatalf("mutated message (%d bytes): Respond succeeded", len(bad))
		}
	}
	// Every byte of the prefix matters (the middle of the KEM ciphertext is
	// sampled by mutations above).
	for i := 0; i < initialFixedLen+4; i++ {
		if i == 80 {
			i = initialFixedLen - 8
		}
		bad := bytes.Clone(msg)
		bad[i] ^= 0x10
		if _, _, _, err := Respond(r, b.id, b.ps, bad, nil); err == nil {
			t.Fatalf("byte %d flipped: Respond succeeded", i)
		}
	}
	if _, _, _, err := Respond(r, b.id, b.ps, msg, []byte("other ad")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong ad: got %v, want ErrDecrypt", err)
	}
	for _, n := range []int{0, 1, 70, initialFixedLen, len(msg) - 1} {
		if _, _, _, err := Respond(r, b.id, b.ps, msg[:n], nil); err == nil {
			t.Fatalf("truncated to %d: Respond succeeded", n)
		}
	}
	after, _ := b.ps.MarshalBinary()
	if !bytes.Equal(before, after) {
		t.Fatal("failed Respond changed the prekey set")
	}
	if _, _, _, err := Respond(r, b.id, b.ps, msg, nil); err != nil {
		t.Fatalf("the original message after failures: %v", err)
	}
}

// FuzzInitialMessage: parseInitialMessage either fails or its fields
// re-encode to exactly the input; Respond on any input never panics and
// never consumes prekeys unless it succeeds. The input is a patch of a
// vector's initial message (mutate, ratchet_test.go), so that it stays
// small and short runs fuzz rather than minimise; the prekey set is
// decoded once and copied for each run.
func FuzzInitialMessage(f *testing.F) {
	var v pqxdhVector
	loadJSON(f, "testdata/core-pqxdh.json", &v)
	var bases [][]byte
	for i, c := range v.Cases {
		bases = append(bases, []byte(c.InitialMessage))
		f.Add(uint8(i), uint16(0), []byte(nil), uint16(0))
		f.Add(uint8(i), uint16(40*i+1), []byte{0x80}, uint16(0))
	}
	var bid Identity
	if err := bid.UnmarshalBinary(v.Cases[0].BobIdentity); err != nil {
		f.Fatal(err)
	}
	var ps0 PrekeySet
	if err := ps0.UnmarshalBinary(v.Cases[0].BobPrekeySet); err != nil {
		f.Fatal(err)
	}
	before, err := ps0.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, base uint8, off uint16, patch []byte, cut uint16) {
		msg := mutate(bases[int(base)%len(bases)], off, patch, cut)
		m, err := parseInitialMessage(msg)
		if err == nil {
			got := append(m.appendPrefix(nil), m.ratchet...)
			if !bytes.Equal(got, msg) {
				t.Fatalf("round trip: got %x, want %x", got, msg)
			}
		}
		var ps PrekeySet
		if err := ps.UnmarshalBinary(before); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := Respond(newTestRand("fuzz"), &bid, &ps, msg, []byte(v.Cases[0].AD)); err != nil {
			if after, _ := ps.MarshalBinary(); !bytes.Equal(before, after) {
				t.Fatal("failed Respond changed the prekey set")
			}
		}
	})
}

func TestRespondAfterRotation(t *testing.T) {
	t.Parallel()
	r := newTestRand("rotation")
	a := newParty(t, r, 0)
	b := newParty(t, r, 0)
	old := b.ps.Bundle(b.id.Public(), false)
	s, err := Initiate(r, a.id, old)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := s.Encrypt([]byte("in flight"), nil)
	// One rotation: the previous signed prekey still answers.
	if err := b.ps.RotateSigned(r, b.id); err != nil {
		t.Fatal(err)
	}
	if b.ps.Bundle(b.id.Public(), false).SignedPrekey.ID == old.SignedPrekey.ID {
		t.Fatal("rotation did not change the current signed prekey")
	}
	if _, pt, _, err := Respond(r, b.id, b.ps, msg, nil); err != nil || string(pt) != "in flight" {
		t.Fatalf("after one rotation: %q, %v", pt, err)
	}
	// A second rotation retires it.
	if err := b.ps.RotateSigned(r, b.id); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Respond(r, b.id, b.ps, msg, nil); !errors.Is(err, ErrUnknownPrekey) {
		t.Fatalf("after two rotations: got %v, want ErrUnknownPrekey", err)
	}

	// The same for the last-resort ML-KEM prekey.
	s, err = Initiate(r, a.id, b.ps.Bundle(b.id.Public(), false))
	if err != nil {
		t.Fatal(err)
	}
	msg, _ = s.Encrypt([]byte("in flight"), nil)
	if err := b.ps.RotateLastResort(r, b.id); err != nil {
		t.Fatal(err)
	}
	if _, _, used, err := Respond(r, b.id, b.ps, msg, nil); err != nil || !used.LastResort {
		t.Fatalf("after one last-resort rotation: %+v, %v", used, err)
	}
	if err := b.ps.RotateLastResort(r, b.id); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Respond(r, b.id, b.ps, msg, nil); !errors.Is(err, ErrUnknownPrekey) {
		t.Fatalf("after two last-resort rotations: got %v, want ErrUnknownPrekey", err)
	}
}

func TestPQXDHRejectsLowOrderKeys(t *testing.T) {
	t.Parallel()
	r := newTestRand("low order")
	a := newParty(t, r, 1)
	b := newParty(t, r, 1)
	// A bundle whose (validly signed) signed prekey is a low-order point.
	bad := b.ps.Bundle(b.id.Public(), true)
	bad.SignedPrekey.Public = [32]byte{}
	copy(bad.SignedPrekey.Signature[:], b.id.Sign(prekeySigMessage(RecordSigned, bad.SignedPrekey.ID, bad.SignedPrekey.Public[:])))
	if _, err := Initiate(r, a.id, bad); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("low-order signed prekey: got %v, want ErrInvalidKey", err)
	}
	// An initial message whose ephemeral key is a low-order point.
	s, _ := Initiate(r, a.id, b.ps.Bundle(b.id.Public(), true))
	msg, _ := s.Encrypt([]byte("x"), nil)
	msg = bytes.Clone(msg)
	clear(msg[33:65])
	before, _ := b.ps.MarshalBinary()
	if _, _, _, err := Respond(r, b.id, b.ps, msg, nil); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("low-order ephemeral key: got %v, want ErrInvalidKey", err)
	}
	if after, _ := b.ps.MarshalBinary(); !bytes.Equal(before, after) {
		t.Fatal("failed Respond changed the prekey set")
	}
}

func TestPrekeyIDsUnique(t *testing.T) {
	t.Parallel()
	r := newTestRand("prekey ids")
	p := newParty(t, r, 3)
	if err := p.ps.AddOneTime(r, p.id, 3); err != nil {
		t.Fatal(err)
	}
	if err := p.ps.RotateSigned(r, p.id); err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]bool{}
	if err := p.ps.RotateLastResort(r, p.id); err != nil {
		t.Fatal(err)
	}
	ids := []uint32{p.ps.lastResort[0].id, p.ps.lastResort[1].id}
	for _, k := range append(append([]x25519Prekey(nil), p.ps.signed...), p.ps.oneTime...) {
		ids = append(ids, k.id)
	}
	for _, k := range p.ps.kem {
		ids = append(ids, k.id)
	}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("prekey id %d used twice", id)
		}
		seen[id] = true
	}
	if x, k := p.ps.OneTimeCount(); x != 6 || k != 6 || len(ids) != 2+2+6+6 {
		t.Fatalf("counts: %d one-time X25519, %d ML-KEM, %d ids", x, k, len(ids))
	}
}
