package session

import (
	"bytes"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// testRand is the deterministic randomness source for tests and vectors
// (docs/protocol.md section 2.9): the concatenation of
// SHA-256(seed || uint64be(0)), SHA-256(seed || uint64be(1)), ...
type testRand struct {
	seed []byte
	ctr  uint64
	buf  []byte
}

func newTestRand(seed string) *testRand { return &testRand{seed: []byte(seed)} }

func (r *testRand) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(r.buf) == 0 {
			h := sha256.New()
			h.Write(r.seed)
			h.Write(binary.BigEndian.AppendUint64(nil, r.ctr))
			r.ctr++
			r.buf = h.Sum(nil)
		}
		c := copy(p[n:], r.buf)
		r.buf = r.buf[c:]
		n += c
	}
	return n, nil
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIdentityRFC8032(t *testing.T) {
	// RFC 8032 section 7.1, TEST 1.
	seed := unhex(t, "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	want := unhex(t, "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
	wantSig := unhex(t, "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
	var id Identity
	if err := id.UnmarshalBinary(append([]byte{identityVersion}, seed...)); err != nil {
		t.Fatal(err)
	}
	pub := id.Public()
	if !bytes.Equal(pub[:], want) {
		t.Fatalf("public key: got %x, want %x", pub, want)
	}
	if sig := id.Sign(nil); !bytes.Equal(sig, wantSig) {
		t.Fatalf("signature: got %x, want %x", sig, wantSig)
	}
	if !pub.Verify(nil, wantSig) {
		t.Fatal("Verify rejected the RFC 8032 signature")
	}
}

func TestIdentityX25519Form(t *testing.T) {
	t.Parallel()
	r := newTestRand("identity x25519 form")
	for i := range 64 {
		id, err := NewIdentity(r)
		if err != nil {
			t.Fatal(err)
		}
		x, err := id.Public().X25519()
		if err != nil {
			t.Fatalf("identity %d: %v", i, err)
		}
		// X25519(priv, basepoint) must equal the mapped Ed25519 key.
		if got := id.xpriv.PublicKey().Bytes(); !bytes.Equal(got, x.Bytes()) {
			t.Fatalf("identity %d: X25519(priv, 9) = %x, mapped public key = %x", i, got, x.Bytes())
		}
		sk := id.Public().SignalKey()
		if sk[0] != 0x05 || !bytes.Equal(sk[1:], x.Bytes()) {
			t.Fatalf("identity %d: SignalKey = %x, want 05%x", i, sk, x.Bytes())
		}
	}
}

func TestIdentityECDHAgrees(t *testing.T) {
	t.Parallel()
	r := newTestRand("identity ecdh")
	a, _ := NewIdentity(r)
	b, _ := NewIdentity(r)
	ax, _ := a.Public().X25519()
	bx, _ := b.Public().X25519()
	ab, err := a.ECDH(bx)
	if err != nil {
		t.Fatal(err)
	}
	ba, err := b.ECDH(ax)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ab, ba) {
		t.Fatalf("a->b %x != b->a %x", ab, ba)
	}
	e, _ := ecdh.X25519().NewPrivateKey(bytes.Repeat([]byte{7}, 32))
	ae, _ := a.ECDH(e.PublicKey())
	ea, _ := e.ECDH(ax)
	if !bytes.Equal(ae, ea) {
		t.Fatalf("identity/ephemeral: %x != %x", ae, ea)
	}
	// A low-order peer gives an all-zero result, which ECDH refuses.
	low, err := ecdh.X25519().NewPublicKey(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ECDH(low); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("ECDH with a low-order point: got %v, want ErrInvalidKey", err)
	}
}

// TestIdentityLibsodiumConversion checks the Ed25519-to-X25519 conversion
// against libsodium's test/default/ed25519_convert.c values.
func TestIdentityLibsodiumConversion(t *testing.T) {
	seed := unhex(t, "421151a459faeade3d247115f94aedae42318124095afabe4d1451a559faedee")
	wantPK := unhex(t, "f1814f0e8ff1043d8a44d25babff3cedcae6c22c3edaa48f857ae70de2baae50")
	wantSK := unhex(t, "8052030376d47112be7f73ed7a019293dd12ad910b654455798b4667d73de166")
	id, err := identityFromSeed([32]byte(seed))
	if err != nil {
		t.Fatal(err)
	}
	x, err := id.Public().X25519()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x.Bytes(), wantPK) {
		t.Errorf("x25519 public: got %x, want %x", x.Bytes(), wantPK)
	}
	if got := id.xpriv.Bytes(); !bytes.Equal(got, wantSK) {
		t.Errorf("x25519 private: got %x, want %x", got, wantSK)
	}
}

func TestPublicIdentityRejects(t *testing.T) {
	t.Parallel()
	le := func(s string) PublicIdentity { // from a big-endian hex string
		b := unhex(t, s)
		var p PublicIdentity
		for i := range b {
			p[i] = b[len(b)-1-i]
		}
		return p
	}
	tests := []struct {
		name string
		key  PublicIdentity
	}{
		{"identity point y=1", le("0000000000000000000000000000000000000000000000000000000000000001")},
		{"order 2 y=-1", le("7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffec")},
		{"order 4 y=0", le("0000000000000000000000000000000000000000000000000000000000000000")},
		// The order-8 encodings as listed in the Ed25519 literature (little-endian).
		{"order 8 a", PublicIdentity(unhex(t, "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"))},
		{"order 8 b", PublicIdentity(unhex(t, "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"))},
		{"order 8 a, x negated", PublicIdentity(unhex(t, "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"))},
		{"y = p", le("7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffed")},
		{"y = p+1 (non-canonical identity)", le("7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffee")},
		{"x = 0 with sign bit", le("8000000000000000000000000000000000000000000000000000000000000001")},
		{"not on curve y=2", le("0000000000000000000000000000000000000000000000000000000000000002")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.key.X25519(); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("X25519(): got %v, want ErrInvalidKey", err)
			}
			if err := tt.key.Check(); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Check(): got %v, want ErrInvalidKey", err)
			}
			if tt.key.Verify([]byte("m"), make([]byte, 64)) {
				t.Error("Verify accepted a signature under an invalid key")
			}
			if tt.name != "not on curve y=2" && tt.key.canonicalLargeOrder() {
				t.Error("canonicalLargeOrder accepted the key")
			}
		})
	}
}

func TestIdentityVerify(t *testing.T) {
	t.Parallel()
	id, _ := NewIdentity(newTestRand("identity verify"))
	msg := []byte("prekey")
	sig := id.Sign(msg)
	if !id.Public().Verify(msg, sig) {
		t.Fatal("Verify rejected a good signature")
	}
	if id.Public().Verify([]byte("prekez"), sig) {
		t.Error("Verify accepted a signature over another message")
	}
	bad := bytes.Clone(sig)
	bad[5] ^= 1
	if id.Public().Verify(msg, bad) {
		t.Error("Verify accepted a modified signature")
	}
	if id.Public().Verify(msg, sig[:63]) {
		t.Error("Verify accepted a truncated signature")
	}
}

func TestIdentityMarshal(t *testing.T) {
	t.Parallel()
	id, _ := NewIdentity(newTestRand("identity marshal"))
	b, err := id.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != identityLen || b[0] != identityVersion {
		t.Fatalf("encoding %x: want %d bytes starting with %#x", b, identityLen, identityVersion)
	}
	var got Identity
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got.Public() != id.Public() {
		t.Fatalf("round trip: got %x, want %x", got.Public(), id.Public())
	}
	for _, bad := range [][]byte{nil, b[:32], append(bytes.Clone(b), 0), append([]byte{2}, b[1:]...)} {
		if err := got.UnmarshalBinary(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("UnmarshalBinary(%x): got %v, want ErrMalformed", bad, err)
		}
	}
}

func TestNewIdentityShortRand(t *testing.T) {
	t.Parallel()
	if _, err := NewIdentity(bytes.NewReader(make([]byte, 31))); err == nil {
		t.Fatal("NewIdentity succeeded with 31 bytes of randomness")
	}
}

// TestCanonicalLargeOrderAgreesWithCheck: on keys that are on the curve,
// the cheap test of Verify and the full Check agree.
func TestCanonicalLargeOrderAgreesWithCheck(t *testing.T) {
	t.Parallel()
	r := newTestRand("canonical agrees")
	for range 200 {
		var p PublicIdentity
		r.Read(p[:])
		// Keep only points on the curve, as crypto/ed25519 would.
		if err := p.Check(); err != nil && !strings.Contains(err.Error(), "small order") && !strings.Contains(err.Error(), "non-canonical") {
			continue
		}
		if (p.Check() == nil) != p.canonicalLargeOrder() {
			t.Fatalf("%x: Check %v, canonicalLargeOrder %v", p, p.Check(), p.canonicalLargeOrder())
		}
	}
	for _, y := range smallOrderY {
		for _, sign := range []byte{0, 0x80} {
			p := PublicIdentity(y)
			p[31] |= sign
			if p.Check() == nil || p.canonicalLargeOrder() {
				t.Fatalf("small-order %x accepted", p)
			}
		}
	}
}

// TestMontgomeryOnCurveAgrees: on keys that decode to a point on the curve
// (which is all that Bundle.verify gives it), the map without the on-curve
// test returns what the full map returns, value and error.
func TestMontgomeryOnCurveAgrees(t *testing.T) {
	t.Parallel()
	r := newTestRand("montgomery on curve")
	onCurve := 0
	for range 400 {
		var p PublicIdentity
		r.Read(p[:])
		want, wantErr := p.montgomery()
		if wantErr != nil && strings.Contains(wantErr.Error(), "not on curve") {
			continue
		}
		onCurve++
		got, err := p.montgomeryOnCurve()
		if got != want || (err == nil) != (wantErr == nil) {
			t.Fatalf("%x: montgomeryOnCurve = %x, %v; montgomery = %x, %v", p, got, err, want, wantErr)
		}
	}
	if onCurve < 100 {
		t.Fatalf("only %d of 400 random keys on the curve, want about half", onCurve)
	}
	// Real identities map to the X25519 public key of their private key.
	for i := range 20 {
		id, err := NewIdentity(newTestRand("montgomery on curve id " + string(rune('a'+i))))
		if err != nil {
			t.Fatal(err)
		}
		u, err := id.Public().montgomeryOnCurve()
		if err != nil || u != id.xpub {
			t.Fatalf("identity %d: got %x, %v; want %x", i, u, err, id.xpub)
		}
	}
}

// TestIdentitySignFlip: an identity and its sign-flipped encoding (-A) are
// both valid keys with the same X25519 form, hence the same PQXDH and
// sealed-sender authentication; Equal and Canonical treat them as one
// identity, while Ed25519 signatures still tell them apart (review L3).
func TestIdentitySignFlip(t *testing.T) {
	t.Parallel()
	r := newTestRand("identity sign flip")
	for i := range 16 {
		id, err := NewIdentity(r)
		if err != nil {
			t.Fatal(err)
		}
		other, err := NewIdentity(r)
		if err != nil {
			t.Fatal(err)
		}
		pub := id.Public()
		flipped := pub
		flipped[31] ^= 0x80
		if err := flipped.Check(); err != nil {
			t.Fatalf("key %d: flipped encoding rejected: %v", i, err)
		}
		if pub.SignalKey() != flipped.SignalKey() {
			t.Fatalf("key %d: A and -A have different X25519 forms", i)
		}
		if !pub.Equal(flipped) || !flipped.Equal(pub) || pub.Canonical() != flipped.Canonical() {
			t.Fatalf("key %d: A and -A are not one identity", i)
		}
		if c := pub.Canonical(); c[31]&0x80 != 0 || !c.Equal(pub) {
			t.Fatalf("key %d: Canonical %x has the sign bit set", i, c)
		}
		if pub.Equal(other.Public()) || pub.Canonical() == other.Public().Canonical() {
			t.Fatalf("key %d: distinct identities compare equal", i)
		}
		if flipped.Verify([]byte("m"), id.Sign([]byte("m"))) {
			t.Fatalf("key %d: -A verifies a signature by A", i)
		}
	}
}
