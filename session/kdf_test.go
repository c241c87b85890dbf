package session

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func loadJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

type rfcVectors struct {
	HKDF struct {
		Cases []struct {
			Name, IKM, Salt, Info, PRK, OKM string
			L                               int
		}
	} `json:"hkdf_sha256"`
	X25519 struct {
		Cases []struct{ Name, Scalar, U, Out string }
	} `json:"x25519"`
	Convert struct {
		Seed         string
		X25519Public string `json:"x25519_public"`
		X25519Priv   string `json:"x25519_private"`
	} `json:"ed25519_to_x25519"`
}

func TestRFC5869(t *testing.T) {
	t.Parallel()
	var v rfcVectors
	loadJSON(t, "testdata/core-rfc.json", &v)
	if len(v.HKDF.Cases) == 0 {
		t.Fatal("no vectors")
	}
	for _, c := range v.HKDF.Cases {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			ikm, salt, info := unhex(t, c.IKM), unhex(t, c.Salt), unhex(t, c.Info)
			if got := hmacSHA256(salt, ikm); !bytes.Equal(got[:], unhex(t, c.PRK)) {
				t.Errorf("prk: got %x, want %s", got, c.PRK)
			}
			out := make([]byte, c.L)
			hkdfSHA256(out, salt, ikm, string(info))
			if !bytes.Equal(out, unhex(t, c.OKM)) {
				t.Errorf("okm: got %x, want %s", out, c.OKM)
			}
		})
	}
}

// TestHKDFMatchesStdlib cross-checks the allocation-free HMAC and HKDF
// against crypto/hmac and crypto/hkdf over many lengths.
func TestHKDFMatchesStdlib(t *testing.T) {
	t.Parallel()
	r := newTestRand("hkdf cross-check")
	for n := range 129 {
		ikm := make([]byte, n)
		r.Read(ikm)
		salt := make([]byte, n%65)
		r.Read(salt)
		m := hmac.New(sha256.New, salt)
		m.Write(ikm)
		if got := hmacSHA256(salt, ikm[:n/2], ikm[n/2:]); !bytes.Equal(got[:], m.Sum(nil)) {
			t.Fatalf("hmac, %d-byte message: got %x, want %x", n, got, m.Sum(nil))
		}
		for _, l := range []int{1, 32, 33, 80, 96} {
			want, err := hkdf.Key(sha256.New, ikm, salt, "info label", l)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, l)
			hkdfSHA256(got, salt, ikm, "info label")
			if !bytes.Equal(got, want) {
				t.Fatalf("hkdf ikm %d, L %d: got %x, want %x", n, l, got, want)
			}
		}
	}
}

func TestRFC7748(t *testing.T) {
	t.Parallel()
	var v rfcVectors
	loadJSON(t, "testdata/core-rfc.json", &v)
	if len(v.X25519.Cases) == 0 {
		t.Fatal("no vectors")
	}
	for _, c := range v.X25519.Cases {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			priv, err := ecdh.X25519().NewPrivateKey(unhex(t, c.Scalar))
			if err != nil {
				t.Fatal(err)
			}
			out, err := x25519(priv, unhex(t, c.U))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, unhex(t, c.Out)) {
				t.Fatalf("got %x, want %s", out, c.Out)
			}
		})
	}
	t.Run("ed25519 to x25519", func(t *testing.T) {
		id, err := identityFromSeed([32]byte(unhex(t, v.Convert.Seed)))
		if err != nil {
			t.Fatal(err)
		}
		x, err := id.Public().X25519()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x.Bytes(), unhex(t, v.Convert.X25519Public)) {
			t.Errorf("public: got %x, want %s", x.Bytes(), v.Convert.X25519Public)
		}
		if !bytes.Equal(id.xpriv.Bytes(), unhex(t, v.Convert.X25519Priv)) {
			t.Errorf("private: got %x, want %s", id.xpriv.Bytes(), v.Convert.X25519Priv)
		}
	})
}

type libsignalVectors struct {
	ChainKey struct {
		Inputs struct {
			ChainKey string `json:"chain_key"`
		}
		Expected struct {
			CipherKey    string `json:"cipher_key"`
			MacKey       string `json:"mac_key"`
			NextChainKey string `json:"next_chain_key"`
		} `json:"expected_upstream"`
		Local struct {
			MessageKeySeed string `json:"message_key_seed"`
			IV             string
			Index1         struct {
				ChainKey       string `json:"chain_key"`
				MessageKeySeed string `json:"message_key_seed"`
				CipherKey      string `json:"cipher_key"`
				MacKey         string `json:"mac_key"`
				IV             string
				NextChainKey   string `json:"next_chain_key"`
			} `json:"index_1"`
		} `json:"computed_locally"`
	} `json:"chain_key"`
	RootKey struct {
		V struct {
			RootKey    string `json:"root_key"`
			OurPrivate string `json:"our_ratchet_private"`
			TheirPub   string `json:"their_ratchet_public"`
			Shared     string `json:"x25519_shared_secret"`
			NewRoot    string `json:"new_root_key"`
			NewChain   string `json:"new_chain_key"`
		} `json:"standard_vector_computed_locally"`
	} `json:"root_key"`
	X3DH struct {
		Inputs struct {
			BobIdentityPrivate string `json:"bob_identity_private"`
			BobSignedPrivate   string `json:"bob_signed_prekey_private"`
			AliceIdentity      string `json:"alice_identity_public"`
			AliceBase          string `json:"alice_base_public"`
		}
		Expected struct {
			ChainKey string `json:"bob_sender_chain_key"`
		} `json:"expected_upstream"`
		Local struct {
			RootKey string `json:"root_key"`
		} `json:"computed_locally"`
	} `json:"legacy_x3dh_session_init_bob"`
	Agreement struct {
		AlicePrivate string `json:"alice_private"`
		AlicePublic  string `json:"alice_public"`
		BobPrivate   string `json:"bob_private"`
		BobPublic    string `json:"bob_public"`
		Shared       string `json:"shared_secret"`
	} `json:"curve25519_agreement"`
}

// TestLibsignalChainKey checks the chain-key and message-key KDFs against
// libsignal's test_chain_key_derivation values.
func TestLibsignalChainKey(t *testing.T) {
	t.Parallel()
	var v libsignalVectors
	loadJSON(t, "testdata/core-libsignal.json", &v)
	c := v.ChainKey
	ck := [32]byte(unhex(t, c.Inputs.ChainKey))
	seed, next := kdfCK(&ck)
	mk := deriveMessageKeys(&seed)
	check := func(name string, got []byte, want string) {
		t.Helper()
		if !bytes.Equal(got, unhex(t, want)) {
			t.Errorf("%s: got %x, want %s", name, got, want)
		}
	}
	check("cipher key", mk.cipherKey[:], c.Expected.CipherKey)
	check("mac key", mk.macKey[:], c.Expected.MacKey)
	check("next chain key", next[:], c.Expected.NextChainKey)
	check("message key seed", seed[:], c.Local.MessageKeySeed)
	check("iv", mk.iv[:], c.Local.IV)
	i1 := c.Local.Index1
	check("index 1 chain key", next[:], i1.ChainKey)
	seed, next = kdfCK(&next)
	mk = deriveMessageKeys(&seed)
	check("index 1 seed", seed[:], i1.MessageKeySeed)
	check("index 1 cipher key", mk.cipherKey[:], i1.CipherKey)
	check("index 1 mac key", mk.macKey[:], i1.MacKey)
	check("index 1 iv", mk.iv[:], i1.IV)
	check("index 1 next chain key", next[:], i1.NextChainKey)
}

// TestLibsignalRootKey checks the root-key KDF (whose first 64 bytes are
// Signal's) and X25519 against the root-key and agreement values.
func TestLibsignalRootKey(t *testing.T) {
	t.Parallel()
	var v libsignalVectors
	loadJSON(t, "testdata/core-libsignal.json", &v)
	r := v.RootKey.V
	priv, err := ecdh.X25519().NewPrivateKey(unhex(t, r.OurPrivate))
	if err != nil {
		t.Fatal(err)
	}
	their := unhex(t, r.TheirPub)
	if their[0] != 0x05 {
		t.Fatalf("their key %x: want 0x05 prefix", their)
	}
	dh, err := x25519(priv, their[1:])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dh, unhex(t, r.Shared)) {
		t.Fatalf("shared secret: got %x, want %s", dh, r.Shared)
	}
	rk := [32]byte(unhex(t, r.RootKey))
	root, chain, nhk := kdfRK(&rk, dh)
	if !bytes.Equal(root[:], unhex(t, r.NewRoot)) || !bytes.Equal(chain[:], unhex(t, r.NewChain)) {
		t.Fatalf("root KDF: got %x | %x, want %s | %s", root, chain, r.NewRoot, r.NewChain)
	}
	// The header key is the next 32 bytes of the same HKDF output.
	full, err := hkdf.Key(sha256.New, dh, rk[:], labelRatchet, 96)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(nhk[:], full[64:]) {
		t.Fatalf("next header key: got %x, want %x", nhk, full[64:])
	}

	a := v.Agreement
	for _, dir := range []struct{ priv, pub string }{{a.AlicePrivate, a.BobPublic}, {a.BobPrivate, a.AlicePublic}} {
		k, err := ecdh.X25519().NewPrivateKey(unhex(t, dir.priv))
		if err != nil {
			t.Fatal(err)
		}
		out, err := x25519(k, unhex(t, dir.pub))
		if err != nil || !bytes.Equal(out, unhex(t, a.Shared)) {
			t.Fatalf("agreement: got %x, %v, want %s", out, err, a.Shared)
		}
	}
}

// TestLibsignalX3DHPlumbing checks the PQXDH KDF's layout (0xFF*32 || DH1
// || DH2 || DH3, HKDF with a zero salt) with libsignal's classic X3DH
// session-init value: the same construction with info "WhisperText" and no
// KEM secret.
func TestLibsignalX3DHPlumbing(t *testing.T) {
	t.Parallel()
	var v libsignalVectors
	loadJSON(t, "testdata/core-libsignal.json", &v)
	in := v.X3DH.Inputs
	ikB, _ := ecdh.X25519().NewPrivateKey(unhex(t, in.BobIdentityPrivate))
	spkB, _ := ecdh.X25519().NewPrivateKey(unhex(t, in.BobSignedPrivate))
	dh1, err1 := x25519(spkB, unhex(t, in.AliceIdentity)[1:])
	dh2, err2 := x25519(ikB, unhex(t, in.AliceBase)[1:])
	dh3, err3 := x25519(spkB, unhex(t, in.AliceBase)[1:])
	if err1 != nil || err2 != nil || err3 != nil {
		t.Fatal(err1, err2, err3)
	}
	ikm := append(bytes.Repeat([]byte{0xff}, 32), append(append(dh1, dh2...), dh3...)...)
	out := make([]byte, 64)
	hkdfSHA256(out, nil, ikm, "WhisperText")
	if !bytes.Equal(out[32:], unhex(t, v.X3DH.Expected.ChainKey)) {
		t.Fatalf("chain key: got %x, want %s", out[32:], v.X3DH.Expected.ChainKey)
	}
	if !bytes.Equal(out[:32], unhex(t, v.X3DH.Local.RootKey)) {
		t.Fatalf("root key: got %x, want %s", out[:32], v.X3DH.Local.RootKey)
	}
}

// TestImports enforces the package's import rules (house style 3): the
// session package imports nothing else of Ferry's and, outside tests, not
// package testing; its primitives come from the standard library and
// golang.org/x/crypto only.
func TestImports(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			std := !strings.Contains(strings.SplitN(path, "/", 2)[0], ".")
			switch {
			case path == "testing" || strings.HasPrefix(path, "testing/") || path == "crypto/mlkem/mlkemtest":
				t.Errorf("%s imports %s", name, path)
			case std, strings.HasPrefix(path, "golang.org/x/crypto/"):
			default:
				t.Errorf("%s imports %s: only the standard library and golang.org/x/crypto are allowed", name, path)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no source files found")
	}
}

// TestMacHasherMatches checks the midstate KDFs of the message path against
// the plain ones (which the libsignal and RFC vectors check) on many keys.
func TestMacHasherMatches(t *testing.T) {
	t.Parallel()
	r := newTestRand("mac hasher")
	m := newMACHasher()
	for range 300 {
		var ck [32]byte
		r.Read(ck[:])
		s1, n1 := kdfCK(&ck)
		s2, n2 := m.chainStep(&ck)
		if s1 != s2 || n1 != n2 {
			t.Fatalf("chain step of %x: got %x %x, want %x %x", ck, s2, n2, s1, n1)
		}
		if got, want := m.messageKeys(&s1), deriveMessageKeys(&s1); got != want {
			t.Fatalf("message keys of %x: got %x, want %x", s1, got, want)
		}
	}
	// And libsignal's chain-key value directly.
	var v libsignalVectors
	loadJSON(t, "testdata/core-libsignal.json", &v)
	ck := [32]byte(unhex(t, v.ChainKey.Inputs.ChainKey))
	seed, next := m.chainStep(&ck)
	mk := m.messageKeys(&seed)
	if !bytes.Equal(mk.cipherKey[:], unhex(t, v.ChainKey.Expected.CipherKey)) || !bytes.Equal(next[:], unhex(t, v.ChainKey.Expected.NextChainKey)) || !bytes.Equal(mk.macKey[:], unhex(t, v.ChainKey.Expected.MacKey)) {
		t.Fatal("midstate KDFs disagree with libsignal's chain-key value")
	}
}

// TestMacHasherErases: after a KDF the hasher holds nothing derived from
// the key it used.
func TestMacHasherErases(t *testing.T) {
	t.Parallel()
	m := newMACHasher()
	var ck [32]byte
	newTestRand("erase").Read(ck[:])
	seed, _ := m.chainStep(&ck)
	m.messageKeys(&seed)
	var zero macHasher
	if m.inner != zero.inner || m.outer != zero.outer || m.msg != zero.msg || m.sum != zero.sum {
		t.Fatal("macHasher keeps keyed state after use")
	}
}

// TestHMACAnyLength checks hmacSHA256 against crypto/hmac for keys longer
// than a block and messages beyond the stack buffer, where it once
// truncated silently (review L5).
func TestHMACAnyLength(t *testing.T) {
	t.Parallel()
	r := newTestRand("hmac any length")
	for _, kl := range []int{0, 32, 64, 65, 100, 200} {
		for _, ml := range []int{0, 1, 127, 128, 129, 200, 1000, 70000} {
			key := make([]byte, kl)
			r.Read(key)
			msg := make([]byte, ml)
			r.Read(msg)
			m := hmac.New(sha256.New, key)
			m.Write(msg)
			want := m.Sum(nil)
			if got := hmacSHA256(key, msg[:ml/3], msg[ml/3:]); !bytes.Equal(got[:], want) {
				t.Errorf("hmacSHA256, %d-byte key, %d-byte message: got %x, want %x", kl, ml, got, want)
			}
		}
	}
}
