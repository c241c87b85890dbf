package ranking

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"filippo.io/edwards25519"

	"github.com/ferry-im/ferry/link"
)

var now = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

func seeded(seed byte) *rand.ChaCha8 { return rand.NewChaCha8([32]byte{seed}) }

// fixture is a relay key, a ranking key certified by it and a ranking.
type fixture struct {
	relayPriv, relayPub [32]byte
	key                 ed25519.PrivateKey
	r                   *Ranking
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{}
	rnd := seeded(1)
	rnd.Read(f.relayPriv[:])
	k, err := ecdh.X25519().NewPrivateKey(f.relayPriv[:])
	if err != nil {
		t.Fatal(err)
	}
	copy(f.relayPub[:], k.PublicKey().Bytes())
	_, f.key, _ = ed25519.GenerateKey(rnd)
	cert, err := NewCert(f.relayPriv, f.key.Public().(ed25519.PublicKey), now.Add(365*24*time.Hour), rnd)
	if err != nil {
		t.Fatal(err)
	}
	f.r = &Ranking{Cert: cert, Networks: []Network{
		{Name: "home-isp", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32")},
			Entries: []Entry{{"tcp", Blocked, 0}, {"https", OK, 100}, {"obfs", Throttled, 40}}},
		{Name: "mobile", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.128/25")},
			Entries: []Entry{{"https", OK, 90}, {"obfs", OK, 95}}},
		{Name: "default", Entries: []Entry{{"tcp", OK, 100}}},
	}}
	return f
}

func (f *fixture) sign(t testing.TB) []byte {
	t.Helper()
	b, err := Sign(f.r, f.key, now)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestXEdDSAVerifiesWithEd25519(t *testing.T) {
	// The Edwards form of an X25519 public key (from crypto/ecdh) is k·B
	// with the sign bit cleared (from edwards25519): two libraries agree
	// on the conversion, and signatures verify under it and only under it.
	rnd := seeded(2)
	for range 50 {
		var priv [32]byte
		rnd.Read(priv[:])
		k, _ := ecdh.X25519().NewPrivateKey(priv[:])
		var u [32]byte
		copy(u[:], k.PublicKey().Bytes())
		pub, err := edwardsKey(u)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := new(edwards25519.Scalar).SetBytesWithClamping(priv[:])
		e := new(edwards25519.Point).ScalarBaseMult(s).Bytes()
		e[31] &= 0x7f
		if !bytes.Equal(pub, e) {
			t.Fatalf("Edwards key %x, want %x", pub, e)
		}
		msg := []byte("ferry ranking cert v1 test")
		sig, err := xeddsaSign(priv, msg, rnd)
		if err != nil {
			t.Fatal(err)
		}
		if !xeddsaVerify(u, msg, sig[:]) {
			t.Fatal("a signature does not verify")
		}
		sig[5] ^= 1
		if xeddsaVerify(u, msg, sig[:]) || xeddsaVerify(u, append(msg, 0), sig[:]) {
			t.Fatal("a changed signature or message verifies")
		}
	}
}

func TestVerify(t *testing.T) {
	f := newFixture(t)
	blob := f.sign(t)
	r, err := Verify(blob, f.relayPub, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Networks) != 3 || r.Networks[0].Name != "home-isp" || r.Networks[0].Entries[1] != (Entry{"https", OK, 100}) {
		t.Fatalf("ranking %+v", r)
	}
	tests := []struct {
		name string
		blob func() []byte
		key  [32]byte
		at   time.Time
		want error
	}{
		{"another relay", func() []byte { return blob }, [32]byte{9}, now, ErrForged},
		{"changed network", func() []byte { return bytes.Replace(blob, []byte("home-isp"), []byte("home-isq"), 1) }, f.relayPub, now, ErrForged},
		{"changed cert", func() []byte { b := bytes.Clone(blob); b[4+40] ^= 1; return b }, f.relayPub, now, ErrForged},
		{"expired", func() []byte { return blob }, f.relayPub, now.Add(DefaultTTL), ErrStale},
		{"from the future", func() []byte { return blob }, f.relayPub, now.Add(-MaxSkew - time.Second), ErrStale},
		{"certificate expired", func() []byte { return blob }, f.relayPub, now.Add(366 * 24 * time.Hour), ErrStale},
		{"truncated", func() []byte { return blob[:len(blob)-1] }, f.relayPub, now, ErrMalformed},
		{"trailing byte", func() []byte { return append(bytes.Clone(blob), 0) }, f.relayPub, now, ErrMalformed},
		{"self-certified", func() []byte { return selfCertified(t, f) }, f.relayPub, now, ErrForged},
	}
	for _, tt := range tests {
		if _, err := Verify(tt.blob(), tt.key, tt.at); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
}

// selfCertified is a ranking whose certificate someone without the relay's
// key made for their own key.
func selfCertified(t *testing.T, f *fixture) []byte {
	var other [32]byte
	seeded(7).Read(other[:])
	_, key, _ := ed25519.GenerateKey(seeded(8))
	cert, err := NewCert(other, key.Public().(ed25519.PublicKey), now.Add(time.Hour), seeded(9))
	if err != nil {
		t.Fatal(err)
	}
	cert.RelayKey = f.relayPub // claim the real relay
	r := *f.r
	r.Cert = cert
	b, err := Sign(&r, key, now)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestForAndOrder(t *testing.T) {
	f := newFixture(t)
	r, err := Verify(f.sign(t), f.relayPub, now)
	if err != nil {
		t.Fatal(err)
	}
	eps := []link.Endpoint{{Transport: "tcp", Addr: "r:1"}, {Transport: "obfs", Addr: "r:2"}, {Transport: "https", Addr: "r:3"}, {Transport: "quic", Addr: "r:4"}}
	tests := []struct {
		addr string
		want string
	}{
		{"203.0.113.7", "https obfs quic tcp"},   // home-isp: https ok, obfs throttled, unranked, tcp blocked
		{"203.0.113.200", "obfs https tcp quic"}, // mobile, the longer prefix
		{"2001:db8::1", "https obfs quic tcp"},
		{"198.51.100.1", "tcp obfs https quic"}, // default: tcp, then unranked in link order
		{"", "tcp obfs https quic"},             // no address: the default network
	}
	for _, tt := range tests {
		var a netip.Addr
		if tt.addr != "" {
			a = netip.MustParseAddr(tt.addr)
		}
		var got string
		for i, ep := range Order(eps, r.For(a)) {
			if i > 0 {
				got += " "
			}
			got += ep.Transport
		}
		if got != tt.want {
			t.Errorf("%s: order %s, want %s", tt.addr, got, tt.want)
		}
	}
}

func TestScore(t *testing.T) {
	if Score(OK, 1) != 100 || Score(OK, 0) != 80 || Score(Blocked, 1) != 0 || Score(Unknown, 0) != unrankedScore || Score(Throttled, 1) <= Score(Intermittent, 1) {
		t.Fatal("scores out of order")
	}
	for s := Unknown; s <= Blocked; s++ {
		if ParseState(s.String()) != s {
			t.Errorf("state %v does not round-trip", s)
		}
	}
}

func FuzzParse(f *testing.F) {
	fx := newFixture(f)
	f.Add(fx.sign(f))
	fx.r.Networks = nil
	f.Add(fx.sign(f))
	f.Add([]byte("FRK\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b)
		if err != nil {
			return
		}
		// Whatever parses re-encodes to the same bytes.
		again, err := r.appendUnsigned(nil)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(again, b[:len(b)-ed25519.SignatureSize]) {
			t.Fatalf("re-encoded %x, want %x", again, b[:len(b)-ed25519.SignatureSize])
		}
	})
}
