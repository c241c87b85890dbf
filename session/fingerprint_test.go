package session

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
)

// fingerprintVectors is the shape of testdata/extras-fingerprint.json
// (libsignal's published values).
type fingerprintVectors struct {
	Inputs struct {
		AliceKey   string   `json:"alice_identity_key"`
		BobKey     string   `json:"bob_identity_key"`
		AliceID    string   `json:"alice_stable_id"`
		BobID      string   `json:"bob_stable_id"`
		Iterations int      `json:"iterations"`
		Versions   []uint32 `json:"versions"`
	} `json:"inputs"`
	Expected struct {
		Displayable string `json:"displayable"`
		AliceV1     string `json:"alice_scannable_v1"`
		BobV1       string `json:"bob_scannable_v1"`
		AliceV2     string `json:"alice_scannable_v2"`
		BobV2       string `json:"bob_scannable_v2"`
	} `json:"expected_upstream"`
	Encoding struct {
		Version    uint32 `json:"version"`
		Local      string `json:"local_fingerprint"`
		Remote     string `json:"remote_fingerprint"`
		Serialized string `json:"serialized"`
	} `json:"expected_upstream_encoding_test"`
	Local struct {
		AliceHash string `json:"alice_hash_64"`
		BobHash   string `json:"bob_hash_64"`
	} `json:"computed_locally"`
}

func loadFingerprintVectors(t testing.TB) *fingerprintVectors {
	t.Helper()
	b, err := os.ReadFile("testdata/extras-fingerprint.json")
	if err != nil {
		t.Fatal(err)
	}
	var v fingerprintVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

func key33(t testing.TB, s string) [33]byte {
	t.Helper()
	b := unhex(t, s)
	if len(b) != 33 {
		t.Fatalf("key length %d, want 33", len(b))
	}
	return [33]byte(b)
}

func TestFingerprintLibsignal(t *testing.T) {
	t.Parallel()
	v := loadFingerprintVectors(t)
	in := v.Inputs
	alice, bob := key33(t, in.AliceKey), key33(t, in.BobKey)

	t.Run("hash", func(t *testing.T) {
		t.Parallel()
		if got := fingerprintHash(in.Iterations, alice, []byte(in.AliceID)); hex.EncodeToString(got[:]) != v.Local.AliceHash {
			t.Errorf("alice hash = %x, want %s", got, v.Local.AliceHash)
		}
		if got := fingerprintHash(in.Iterations, bob, []byte(in.BobID)); hex.EncodeToString(got[:]) != v.Local.BobHash {
			t.Errorf("bob hash = %x, want %s", got, v.Local.BobHash)
		}
	})
	want := map[uint32][2]string{1: {v.Expected.AliceV1, v.Expected.BobV1}, 2: {v.Expected.AliceV2, v.Expected.BobV2}}
	for _, ver := range in.Versions {
		t.Run(fmt.Sprintf("v%d", ver), func(t *testing.T) {
			t.Parallel()
			a, err := NewFingerprint(ver, in.Iterations, alice, bob, []byte(in.AliceID), []byte(in.BobID))
			if err != nil {
				t.Fatal(err)
			}
			b, err := NewFingerprint(ver, in.Iterations, bob, alice, []byte(in.BobID), []byte(in.AliceID))
			if err != nil {
				t.Fatal(err)
			}
			if a.Displayable() != v.Expected.Displayable || b.Displayable() != v.Expected.Displayable {
				t.Errorf("displayable = %s / %s, want %s", a.Displayable(), b.Displayable(), v.Expected.Displayable)
			}
			if got := hex.EncodeToString(a.Scannable()); got != want[ver][0] {
				t.Errorf("alice scannable = %s, want %s", got, want[ver][0])
			}
			if got := hex.EncodeToString(b.Scannable()); got != want[ver][1] {
				t.Errorf("bob scannable = %s, want %s", got, want[ver][1])
			}
			for _, c := range []struct {
				name    string
				f       *Fingerprint
				scanned []byte
				want    bool
			}{
				{"alice scans bob", a, b.Scannable(), true},
				{"bob scans alice", b, a.Scannable(), true},
				{"alice scans herself", a, a.Scannable(), false},
			} {
				got, err := c.f.CompareScanned(c.scanned)
				if err != nil || got != c.want {
					t.Errorf("%s: got %v, %v, want %v, nil", c.name, got, err, c.want)
				}
			}
		})
	}
	t.Run("encoding", func(t *testing.T) {
		t.Parallel()
		e := v.Encoding
		l, r := [32]byte(unhex(t, e.Local)), [32]byte(unhex(t, e.Remote))
		if got := hex.EncodeToString(marshalScannable(e.Version, &l, &r)); got != e.Serialized {
			t.Errorf("marshal = %s, want %s", got, e.Serialized)
		}
		ver, gl, gr, err := parseScannable(unhex(t, e.Serialized))
		if err != nil || ver != e.Version || gl != l || gr != r {
			t.Errorf("parse = %d, %x, %x, %v; want %d, %x, %x", ver, gl, gr, err, e.Version, l, r)
		}
	})
}

func TestFingerprintNegative(t *testing.T) {
	t.Parallel()
	r := extrasDetRand("fingerprint negative")
	keys := make([][33]byte, 3)
	for i := range keys {
		keys[i][0] = 0x05
		r.Read(keys[i][1:])
	}
	const iter = 1024
	base, err := NewFingerprint(2, iter, keys[0], keys[1], []byte("+14152222222"), []byte("+14153333333"))
	if err != nil {
		t.Fatal(err)
	}
	peer, _ := NewFingerprint(2, iter, keys[1], keys[0], []byte("+14153333333"), []byte("+14152222222"))
	otherRemote, _ := NewFingerprint(2, iter, keys[0], keys[2], []byte("+14152222222"), []byte("+14153333333"))
	otherID, _ := NewFingerprint(2, iter, keys[0], keys[1], []byte("+141512222222"), []byte("+14153333333"))
	v1, _ := NewFingerprint(1, iter, keys[0], keys[1], []byte("+14152222222"), []byte("+14153333333"))
	for _, c := range []struct {
		name string
		f    *Fingerprint
	}{{"other remote key", otherRemote}, {"other local id", otherID}} {
		if c.f.Displayable() == base.Displayable() {
			t.Errorf("%s: displayable unchanged", c.name)
		}
		if ok, err := c.f.CompareScanned(peer.Scannable()); ok || err != nil {
			t.Errorf("%s: compare = %v, %v, want false, nil", c.name, ok, err)
		}
	}
	if ok, err := base.CompareScanned(peer.Scannable()); !ok || err != nil {
		t.Errorf("genuine compare = %v, %v, want true, nil", ok, err)
	}
	if v1.Displayable() != base.Displayable() {
		t.Errorf("v1 displayable %s differs from v2 %s", v1.Displayable(), base.Displayable())
	}
	if bytes.Equal(v1.Scannable(), base.Scannable()) {
		t.Error("v1 and v2 scannable equal")
	}
	if _, err := v1.CompareScanned(peer.Scannable()); !errors.Is(err, ErrFingerprintVersion) {
		t.Errorf("version mismatch: got %v, want ErrFingerprintVersion", err)
	}
	for _, it := range []int{-1, 0, 1, fingerprintMaxIter + 1} {
		if _, err := NewFingerprint(2, it, keys[0], keys[1], nil, nil); err == nil {
			t.Errorf("iterations %d accepted", it)
		}
	}
	if _, err := NewFingerprint(0, iter, keys[0], keys[1], nil, nil); err == nil {
		t.Error("version 0 accepted")
	}
}

func TestSafetyNumber(t *testing.T) {
	t.Parallel()
	a, _ := NewIdentity(extrasDetRand("safety a"))
	b, _ := NewIdentity(extrasDetRand("safety b"))
	fa, err := SafetyNumber(a.Public(), b.Public(), []byte("alice"), []byte("bob"))
	if err != nil {
		t.Fatal(err)
	}
	fb, err := SafetyNumber(b.Public(), a.Public(), []byte("bob"), []byte("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if fa.Displayable() != fb.Displayable() || len(fa.Displayable()) != 60 {
		t.Errorf("displayable %q vs %q, want equal, 60 digits", fa.Displayable(), fb.Displayable())
	}
	if ok, err := fa.CompareScanned(fb.Scannable()); !ok || err != nil {
		t.Errorf("compare = %v, %v, want true, nil", ok, err)
	}
	if fa.Version() != SafetyNumberVersion {
		t.Errorf("version %d, want %d", fa.Version(), SafetyNumberVersion)
	}
	// The same as the function libsignal's vectors check, over SignalKey.
	want, _ := NewFingerprint(SafetyNumberVersion, FingerprintIterations, a.Public().SignalKey(), b.Public().SignalKey(), []byte("alice"), []byte("bob"))
	if !bytes.Equal(want.Scannable(), fa.Scannable()) {
		t.Error("SafetyNumber differs from NewFingerprint over SignalKey")
	}
	var bad PublicIdentity
	for i := range bad {
		bad[i] = 0xff // y >= p: not canonical
	}
	if _, err := SafetyNumber(a.Public(), bad, nil, nil); err == nil {
		t.Error("invalid remote key accepted")
	}
}

func TestParseScannableRejects(t *testing.T) {
	t.Parallel()
	good := unhex(t, "080212220a2012121212121212121212121212121212121212121212121212121212121212121a220a20babababababababababababababababababababababababababababababababa")
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"truncated", good[:len(good)-1]},
		{"trailing", append(append([]byte(nil), good...), 0)},
		{"version 0", mut(func(b []byte) []byte { b[1] = 0; return b })},
		{"non-minimal varint", append([]byte{0x08, 0x82, 0x00}, good[2:]...)},
		{"wrong tag", mut(func(b []byte) []byte { b[2] = 0x1a; return b })},
		{"wrong length", mut(func(b []byte) []byte { b[5] = 0x1f; return b })},
	} {
		if _, _, _, err := parseScannable(c.b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", c.name, err)
		}
	}
}

func FuzzParseScannable(f *testing.F) {
	v := loadFingerprintVectors(f)
	for _, s := range []string{v.Expected.AliceV1, v.Expected.BobV2, v.Encoding.Serialized} {
		f.Add(unhex(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ver, l, r, err := parseScannable(b)
		if err != nil {
			return
		}
		if got := marshalScannable(ver, &l, &r); !bytes.Equal(got, b) {
			t.Fatalf("round trip: %x -> %x", b, got)
		}
	})
}

func ExampleSafetyNumber() {
	alice, _ := NewIdentity(rand.Reader)
	bob, _ := NewIdentity(rand.Reader)

	// Each side computes the safety number with itself as local.
	onAlice, _ := SafetyNumber(alice.Public(), bob.Public(), nil, nil)
	onBob, _ := SafetyNumber(bob.Public(), alice.Public(), nil, nil)

	// Bob scans the QR code on Alice's screen.
	ok, err := onBob.CompareScanned(onAlice.Scannable())
	fmt.Println(len(onAlice.Displayable()), onAlice.Displayable() == onBob.Displayable(), ok, err)
	// Output: 60 true true <nil>
}

// safetyVectors is testdata/extras-safety-number.json: SafetyNumber over
// Ferry identities.
type safetyVectors struct {
	Description string       `json:"description"`
	Cases       []safetyCase `json:"cases"`
}

type safetyCase struct {
	LocalSeed   string `json:"local_seed"` // identity = NewIdentity(extrasDetRand(seed))
	RemoteSeed  string `json:"remote_seed"`
	LocalID     string `json:"local_id"`
	RemoteID    string `json:"remote_id"`
	LocalKey    string `json:"local_signal_key"`
	RemoteKey   string `json:"remote_signal_key"`
	Displayable string `json:"displayable"`
	Scannable   string `json:"scannable"`
}

func genSafetyVectors(t *testing.T) safetyVectors {
	v := safetyVectors{Description: "Safety numbers over Ferry identities (docs/protocol.md section 3.4), version 2, 5200 iterations. Regenerate: go test ./session -run ExtrasVectors -update"}
	for _, c := range [][4]string{{"safety a", "safety b", "", ""}, {"safety b", "safety a", "", ""}, {"safety a", "safety b", "alice@example", "bob@example"}} {
		l, r := mustIdentity(t, c[0]), mustIdentity(t, c[1])
		f, err := SafetyNumber(l.Public(), r.Public(), []byte(c[2]), []byte(c[3]))
		if err != nil {
			t.Fatal(err)
		}
		lk, rk := l.Public().SignalKey(), r.Public().SignalKey()
		v.Cases = append(v.Cases, safetyCase{c[0], c[1], c[2], c[3], hex.EncodeToString(lk[:]), hex.EncodeToString(rk[:]), f.Displayable(), hex.EncodeToString(f.Scannable())})
	}
	return v
}

func verifySafetyVectors(t *testing.T, v safetyVectors) {
	for i, c := range v.Cases {
		f, err := NewFingerprint(SafetyNumberVersion, FingerprintIterations, key33(t, c.LocalKey), key33(t, c.RemoteKey), []byte(c.LocalID), []byte(c.RemoteID))
		if err != nil || f.Displayable() != c.Displayable || hex.EncodeToString(f.Scannable()) != c.Scannable {
			t.Errorf("case %d: from the stored keys: %v", i, err)
		}
	}
}
