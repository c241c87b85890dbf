package session

import (
	"bytes"
	"errors"
	"math/big"
	"strings"
	"testing"
)

func TestStateRoundTrip(t *testing.T) {
	t.Parallel()
	alice, bob := newPair(t, newTestRand("state round trip"))
	// Leave skipped keys in two chains and a pending prefix at alice.
	lost := mustEncrypt(t, alice, "lost")
	mustDecrypt(t, bob, mustEncrypt(t, alice, "a"), "a")
	mustDecrypt(t, alice, mustEncrypt(t, bob, "b"), "b")
	mustEncrypt(t, alice, "lost 2")
	mustDecrypt(t, bob, mustEncrypt(t, alice, "c"), "c")
	if bob.st.nSkipped != 2 || len(bob.st.skipped) != 2 {
		t.Fatalf("setup: %d skipped keys in %d chains, want 2 in 2", bob.st.nSkipped, len(bob.st.skipped))
	}
	for name, s := range map[string]*Session{"alice": alice, "bob": bob} {
		b := stateBytes(t, s)
		var got Session
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(stateBytes(t, &got), b) {
			t.Fatalf("%s: marshal(unmarshal(b)) != b", name)
		}
		if got.LocalIdentity() != s.LocalIdentity() || got.RemoteIdentity() != s.RemoteIdentity() || got.st.ad != s.st.ad {
			t.Fatalf("%s: identities or associated data differ after a round trip", name)
		}
	}
	// A restored session carries on: bob decrypts the lost message.
	var bob2 Session
	if err := bob2.UnmarshalBinary(stateBytes(t, bob)); err != nil {
		t.Fatal(err)
	}
	mustDecrypt(t, &bob2, lost, "lost")

	// A pending initial-message prefix survives a round trip.
	x, _ := newPair(t, newTestRand("state pending"))
	var x2 Session
	if err := x2.UnmarshalBinary(stateBytes(t, x)); err != nil {
		t.Fatal(err)
	}
	if m := mustEncrypt(t, &x2, "again"); !IsInitialMessage(m) {
		t.Fatal("restored initiator lost its pending prefix")
	}
}

func TestStateRejects(t *testing.T) {
	t.Parallel()
	alice, bob := newPair(t, newTestRand("state rejects"))
	mustEncrypt(t, alice, "lost")
	mustDecrypt(t, bob, mustEncrypt(t, alice, "x"), "x")
	good := stateBytes(t, bob)
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version", append([]byte{2}, good[1:]...)},
		{"unknown flag", append([]byte{1, good[1] | 0x40}, good[2:]...)},
		{"truncated", good[:len(good)-1]},
		{"trailing byte", append(bytes.Clone(good), 0)},
		{"header only", good[:2]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Session
			if err := s.UnmarshalBinary(tt.b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

func TestPrekeySetRoundTrip(t *testing.T) {
	t.Parallel()
	r := newTestRand("prekey set round trip")
	p := newParty(t, r, 3)
	if err := p.ps.RotateSigned(r, p.id); err != nil {
		t.Fatal(err)
	}
	if err := p.ps.RotateSigned(r, p.id); err != nil {
		t.Fatal(err)
	}
	if len(p.ps.signed) != maxSigned {
		t.Fatalf("%d signed prekeys kept, want %d", len(p.ps.signed), maxSigned)
	}
	b, _ := p.ps.MarshalBinary()
	var got PrekeySet
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	b2, _ := got.MarshalBinary()
	if !bytes.Equal(b, b2) {
		t.Fatal("marshal(unmarshal(b)) != b")
	}
	for _, bad := range [][]byte{nil, b[:len(b)-1], append(bytes.Clone(b), 0), append([]byte{9}, b[1:]...)} {
		if err := got.UnmarshalBinary(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d bytes: got %v, want ErrMalformed", len(bad), err)
		}
	}
}

// FuzzState: UnmarshalBinary either fails or round-trips exactly.
func FuzzState(f *testing.F) {
	var v ratchetVector
	loadJSON(f, "testdata/core-ratchet.json", &v)
	f.Add([]byte(v.AliceState))
	f.Add([]byte(v.BobState))
	f.Add([]byte(v.AliceFinal))
	f.Add([]byte(v.BobFinal))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Session
		if err := s.UnmarshalBinary(b); err != nil {
			return
		}
		if got := stateBytes(t, &s); !bytes.Equal(got, b) {
			t.Fatalf("round trip: got %x, want %x", got, b)
		}
	})
}

// FuzzPrekeySet: UnmarshalBinary either fails or round-trips exactly.
func FuzzPrekeySet(f *testing.F) {
	var v prekeyVector
	loadJSON(f, "testdata/core-prekeys.json", &v)
	f.Add([]byte(v.PrekeySet))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ps PrekeySet
		if err := ps.UnmarshalBinary(b); err != nil {
			return
		}
		if got, _ := ps.MarshalBinary(); !bytes.Equal(got, b) {
			t.Fatalf("round trip: got %x, want %x", got, b)
		}
	})
}

// FuzzIdentity: UnmarshalBinary either fails or round-trips exactly.
func FuzzIdentity(f *testing.F) {
	var v identityVector
	loadJSON(f, "testdata/core-identity.json", &v)
	f.Add([]byte(v.Private))
	f.Fuzz(func(t *testing.T, b []byte) {
		var id Identity
		if err := id.UnmarshalBinary(b); err != nil {
			return
		}
		if got, _ := id.MarshalBinary(); !bytes.Equal(got, b) {
			t.Fatalf("round trip: got %x, want %x", got, b)
		}
	})
}

// FuzzPublicIdentity: the Edwards-to-Montgomery map never panics, and a key
// it accepts agrees with crypto/ecdh's view of the point.
func FuzzPublicIdentity(f *testing.F) {
	var v identityVector
	loadJSON(f, "testdata/core-identity.json", &v)
	f.Add([]byte(v.Public))
	f.Add(make([]byte, 32))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) != 32 {
			return
		}
		p := PublicIdentity(b)
		u, merr := p.montgomery()
		if merr != nil && strings.Contains(merr.Error(), "not on curve") && onCurveRef(p) {
			t.Fatalf("%x: montgomery says off the curve, the reference says on it", p)
		}
		if merr == nil {
			if !onCurveRef(p) {
				t.Fatalf("%x: montgomery accepts a key the reference puts off the curve", p)
			}
			if v, err := p.montgomeryOnCurve(); err != nil || v != u {
				t.Fatalf("%x: montgomeryOnCurve = %x, %v; montgomery = %x", p, v, err, u)
			}
		}
		x, err := p.X25519()
		if err != nil {
			if p.Check() == nil {
				t.Fatal("Check accepts a key X25519 rejects")
			}
			return
		}
		sk := p.SignalKey()
		if !bytes.Equal(sk[1:], x.Bytes()) {
			t.Fatal("SignalKey and X25519 disagree")
		}
	})
}

// onCurveRef is the on-curve test written out as in RFC 8032 section
// 5.1.3: x^2 = (y^2-1) * (d*y^2+1)^-1 must be 0 or a square (the sign bit
// is not considered). It is a reference for montgomery's shortcut.
func onCurveRef(p PublicIdentity) bool {
	var be [32]byte
	for i := range be {
		be[i] = p[31-i]
	}
	be[0] &= 0x7f
	y := new(big.Int).SetBytes(be[:])
	y.Mod(y, fieldP)
	y2 := new(big.Int).Exp(y, big.NewInt(2), fieldP)
	num := new(big.Int).Sub(y2, big.NewInt(1))
	den := new(big.Int).Mul(edwardsD, y2)
	den.Add(den, big.NewInt(1)).Mod(den, fieldP)
	x2 := num.Mul(num, new(big.Int).ModInverse(den, fieldP))
	x2.Mod(x2, fieldP)
	return x2.Sign() == 0 || big.Jacobi(x2, fieldP) == 1
}
