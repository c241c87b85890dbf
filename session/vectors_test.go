package session

import (
	"bytes"
	"crypto/hkdf"
	"crypto/mlkem"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"testing"
)

// updateVectors regenerates testdata/core-*.json:
//
//	go test ./session -run '^TestVectors$' -update
var updateVectors = flag.Bool("update", false, "regenerate testdata vectors")

// randNote describes the deterministic randomness of every core vector.
const randNote = "Randomness: the stream SHA-256(seed || uint64be(0)) || SHA-256(seed || uint64be(1)) || ... with the seed string given (ASCII), docs/protocol.md section 2.9. ML-KEM encapsulation draws its 32-byte m from the same stream (FIPS 203 ML-KEM.Encaps_internal)."

// checkVector writes v to path with -update, else checks that the file
// holds exactly v.
func checkVector(t *testing.T, path string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *updateVectors {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: regenerated vector differs from the file (run with -update if the change is intended)", path)
	}
}

type hexBytes []byte

func (h hexBytes) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }
func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := hex.DecodeString(s)
	*h = d
	return err
}

// identityVector: NewIdentity from the stream.
type identityVector struct {
	Description  string   `json:"description"`
	Seed         string   `json:"seed"`
	Private      hexBytes `json:"private"` // Identity.MarshalBinary
	Public       hexBytes `json:"public"`
	X25519Public hexBytes `json:"x25519_public"`
	SignalKey    hexBytes `json:"signal_key"`
	Message      string   `json:"message"`
	Signature    hexBytes `json:"signature"`
}

func genIdentityVector(t *testing.T) identityVector {
	v := identityVector{Description: "NewIdentity reading 32 bytes (the Ed25519 seed) from the stream. " + randNote, Seed: "core identity", Message: "Ferry"}
	id, err := NewIdentity(newTestRand(v.Seed))
	if err != nil {
		t.Fatal(err)
	}
	v.Private, _ = id.MarshalBinary()
	pub := id.Public()
	v.Public = pub[:]
	x, err := pub.X25519()
	if err != nil {
		t.Fatal(err)
	}
	v.X25519Public = x.Bytes()
	sk := pub.SignalKey()
	v.SignalKey = sk[:]
	v.Signature = id.Sign([]byte(v.Message))
	return v
}

// prekeyVector: GeneratePrekeys and the bundles built from it.
type prekeyVector struct {
	Description      string     `json:"description"`
	Seed             string     `json:"seed"`
	OneTime          int        `json:"one_time"`
	Identity         hexBytes   `json:"identity_private"`
	PrekeySet        hexBytes   `json:"prekey_set"`
	SignedRecord     hexBytes   `json:"signed_record"`
	OneTimeRecords   []hexBytes `json:"one_time_records"`
	KEMRecords       []hexBytes `json:"kem_records"`
	LastResortRecord hexBytes   `json:"last_resort_record"`
	BundleOneTime    hexBytes   `json:"bundle_one_time"`
	BundleLastResort hexBytes   `json:"bundle_last_resort"`
}

func genPrekeyVector(t *testing.T) prekeyVector {
	v := prekeyVector{Description: "NewIdentity then GeneratePrekeys(n = one_time) from one stream; bundles as a relay assembles them (section 2.4). " + randNote, Seed: "core prekeys", OneTime: 2}
	r := newTestRand(v.Seed)
	p := newParty(t, r, v.OneTime)
	v.Identity, _ = p.id.MarshalBinary()
	v.PrekeySet, _ = p.ps.MarshalBinary()
	recs := p.ps.Records()
	v.SignedRecord, v.LastResortRecord = recs.Signed, recs.LastResort
	for _, b := range recs.OneTime {
		v.OneTimeRecords = append(v.OneTimeRecords, b)
	}
	for _, b := range recs.KEM {
		v.KEMRecords = append(v.KEMRecords, b)
	}
	v.BundleOneTime, _ = p.ps.Bundle(p.id.Public(), true).MarshalBinary()
	v.BundleLastResort, _ = p.ps.Bundle(p.id.Public(), false).MarshalBinary()
	return v
}

// pqxdhVector: a full PQXDH setup, both sides.
type pqxdhVector struct {
	Description string      `json:"description"`
	Cases       []pqxdhCase `json:"cases"`
}

type pqxdhCase struct {
	Name            string            `json:"name"`
	Seed            string            `json:"seed"`
	AliceIdentity   hexBytes          `json:"alice_identity_private"`
	BobIdentity     hexBytes          `json:"bob_identity_private"`
	BobPrekeySet    hexBytes          `json:"bob_prekey_set"`
	Bundle          hexBytes          `json:"bundle"`
	Plaintext       string            `json:"plaintext"`
	AD              string            `json:"ad"`
	InitialMessage  hexBytes          `json:"initial_message"`
	Intermediate    pqxdhIntermediate `json:"intermediate"`
	AliceState      hexBytes          `json:"alice_state"`
	BobState        hexBytes          `json:"bob_state"`
	BobPrekeysAfter hexBytes          `json:"bob_prekey_set_after"`
}

// pqxdhIntermediate are the values of docs/protocol.md sections 2.2 and 2.5
// for one setup, recomputed on Bob's side, for other implementations to
// debug against.
type pqxdhIntermediate struct {
	DH           []hexBytes `json:"dh"` // DH1, DH2, DH3[, DH4]
	SharedSecret hexBytes   `json:"kem_shared_secret"`
	SK           hexBytes   `json:"sk"`
	HKa          hexBytes   `json:"hka"`
	NHKb         hexBytes   `json:"nhkb"`
	AD           hexBytes   `json:"ad"`
}

func pqxdhIntermediates(t *testing.T, bob *Identity, ps *PrekeySet, msg []byte) pqxdhIntermediate {
	im, err := parseInitialMessage(msg)
	if err != nil {
		t.Fatal(err)
	}
	uA, err := im.identity.montgomery()
	if err != nil {
		t.Fatal(err)
	}
	spk, _ := ps.findSigned(im.signedID).privateKey()
	dh1, _ := x25519(spk, uA[:])
	dh2, _ := x25519(bob.xpriv, im.ephemeral[:])
	dh3, _ := x25519(spk, im.ephemeral[:])
	dhs := [][]byte{dh1, dh2, dh3}
	if im.hasOneTime {
		opk, _ := ps.oneTime[findX25519(ps.oneTime, im.oneTimeID)].privateKey()
		dh4, _ := x25519(opk, im.ephemeral[:])
		dhs = append(dhs, dh4)
	}
	var dk *mlkem.DecapsulationKey768
	if i := findKEM(ps.kem, im.kemID); i >= 0 {
		dk = ps.kem[i].decapsulationKey()
	} else {
		dk = ps.lastResort[findKEM(ps.lastResort, im.kemID)].decapsulationKey()
	}
	ss, err := dk.Decapsulate(im.ciphertext)
	if err != nil {
		t.Fatal(err)
	}
	var v pqxdhIntermediate
	for _, dh := range dhs {
		v.DH = append(v.DH, bytes.Clone(dh))
	}
	v.SharedSecret = ss
	sk, hka, nhkb := pqxdhKDF(dhs, ss)
	v.SK, v.HKa, v.NHKb = sk[:], hka[:], nhkb[:]
	ad := associatedData(&uA, &bob.xpub)
	v.AD = ad[:]
	return v
}

func genPQXDHVector(t *testing.T) pqxdhVector {
	v := pqxdhVector{Description: "Alice: NewIdentity; Bob: NewIdentity, GeneratePrekeys(1); Alice: Initiate(bundle), Encrypt(plaintext, ad); Bob: Respond. All from one stream, in that order. States are Session.MarshalBinary after the exchange. " + randNote}
	for _, oneTime := range []bool{true, false} {
		c := pqxdhCase{Name: "one-time prekeys", Seed: "core pqxdh one-time", Plaintext: "hello, bob", AD: "ad"}
		if !oneTime {
			c.Name, c.Seed = "last-resort kem prekey, no one-time prekey", "core pqxdh last resort"
		}
		r := newTestRand(c.Seed)
		a, err := NewIdentity(r)
		if err != nil {
			t.Fatal(err)
		}
		b := newParty(t, r, 1)
		c.AliceIdentity, _ = a.MarshalBinary()
		c.BobIdentity, _ = b.id.MarshalBinary()
		c.BobPrekeySet, _ = b.ps.MarshalBinary()
		bundle := b.ps.Bundle(b.id.Public(), oneTime)
		c.Bundle, _ = bundle.MarshalBinary()
		alice, err := Initiate(r, a, bundle)
		if err != nil {
			t.Fatal(err)
		}
		c.InitialMessage, err = alice.Encrypt([]byte(c.Plaintext), []byte(c.AD))
		if err != nil {
			t.Fatal(err)
		}
		c.Intermediate = pqxdhIntermediates(t, b.id, b.ps, c.InitialMessage)
		bob, pt, _, err := Respond(r, b.id, b.ps, c.InitialMessage, []byte(c.AD))
		if err != nil || string(pt) != c.Plaintext {
			t.Fatalf("respond: %q, %v", pt, err)
		}
		c.AliceState = stateBytes(t, alice)
		c.BobState = stateBytes(t, bob)
		c.BobPrekeysAfter, _ = b.ps.MarshalBinary()
		v.Cases = append(v.Cases, c)
	}
	return v
}

// ratchetVector: messages between two sessions, delivered out of order.
type ratchetVector struct {
	Description string        `json:"description"`
	AliceSeed   string        `json:"alice_seed"`
	BobSeed     string        `json:"bob_seed"`
	AliceState  hexBytes      `json:"alice_state"`
	BobState    hexBytes      `json:"bob_state"`
	Steps       []ratchetStep `json:"steps"`
	AliceFinal  hexBytes      `json:"alice_state_final"`
	BobFinal    hexBytes      `json:"bob_state_final"`
}

type ratchetStep struct {
	Op        string   `json:"op"`    // "encrypt" or "decrypt"
	Party     string   `json:"party"` // who acts: "alice" or "bob"
	Message   int      `json:"message"`
	Plaintext string   `json:"plaintext"`
	AD        string   `json:"ad"`
	Bytes     hexBytes `json:"bytes,omitempty"` // the message, for encrypt steps
}

// ratchetScript is the vector's sequence: encrypts, and decrypts of earlier
// messages by number, out of order, across several DH ratchet steps.
var ratchetScript = []ratchetStep{
	{Op: "encrypt", Party: "alice", Message: 0, Plaintext: "a0"},
	{Op: "encrypt", Party: "alice", Message: 1, Plaintext: "a1", AD: "ad1"},
	{Op: "encrypt", Party: "alice", Message: 2, Plaintext: "a2"},
	{Op: "decrypt", Party: "bob", Message: 2},
	{Op: "encrypt", Party: "bob", Message: 3, Plaintext: "b0"},
	{Op: "decrypt", Party: "bob", Message: 0},
	{Op: "decrypt", Party: "alice", Message: 3},
	{Op: "encrypt", Party: "alice", Message: 4, Plaintext: "a3 after a ratchet step"},
	{Op: "encrypt", Party: "alice", Message: 5, Plaintext: ""},
	{Op: "decrypt", Party: "bob", Message: 5},
	{Op: "decrypt", Party: "bob", Message: 1},
	{Op: "decrypt", Party: "bob", Message: 4},
	{Op: "encrypt", Party: "bob", Message: 6, Plaintext: "b1"},
	{Op: "encrypt", Party: "bob", Message: 7, Plaintext: "b2"},
	{Op: "decrypt", Party: "alice", Message: 7},
	{Op: "decrypt", Party: "alice", Message: 6},
}

// runRatchetScript runs the script on the two sessions. With record it
// fills in message bytes and plaintexts; otherwise it checks them.
func runRatchetScript(t *testing.T, alice, bob *Session, steps []ratchetStep, record bool) {
	t.Helper()
	msgs := map[int]ratchetStep{}
	for i := range steps {
		st := &steps[i]
		s := alice
		if st.Party == "bob" {
			s = bob
		}
		switch st.Op {
		case "encrypt":
			m, err := s.Encrypt([]byte(st.Plaintext), []byte(st.AD))
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if record {
				st.Bytes = m
			} else if !bytes.Equal(m, st.Bytes) {
				t.Fatalf("step %d: message %d: got %x, want %x", i, st.Message, m, []byte(st.Bytes))
			}
			msgs[st.Message] = *st
		case "decrypt":
			src, ok := msgs[st.Message]
			if !ok {
				t.Fatalf("step %d: message %d not sent yet", i, st.Message)
			}
			pt, err := s.Decrypt(src.Bytes, []byte(src.AD))
			if err != nil {
				t.Fatalf("step %d: decrypt message %d: %v", i, st.Message, err)
			}
			if record {
				st.Plaintext, st.AD = src.Plaintext, src.AD
			} else if string(pt) != st.Plaintext || st.Plaintext != src.Plaintext {
				t.Fatalf("step %d: message %d: got %q, want %q", i, st.Message, pt, st.Plaintext)
			}
		default:
			t.Fatalf("step %d: unknown op %q", i, st.Op)
		}
	}
}

func genRatchetVector(t *testing.T) ratchetVector {
	v := ratchetVector{
		Description: "Two sessions set up as in core-pqxdh.json (case 1, after the first message), then the steps in order; Alice's Session.Rand is the stream of alice_seed, Bob's that of bob_seed. Decrypt steps name the message they deliver. " + randNote,
		AliceSeed:   "core ratchet alice",
		BobSeed:     "core ratchet bob",
	}
	alice, bob := newPair(t, newTestRand("core ratchet setup"))
	alice.Rand, bob.Rand = newTestRand(v.AliceSeed), newTestRand(v.BobSeed)
	v.AliceState, v.BobState = stateBytes(t, alice), stateBytes(t, bob)
	v.Steps = append([]ratchetStep(nil), ratchetScript...)
	runRatchetScript(t, alice, bob, v.Steps, true)
	v.AliceFinal, v.BobFinal = stateBytes(t, alice), stateBytes(t, bob)
	return v
}

// TestVectors regenerates every core vector from its seed and compares it
// with the file (or writes it with -update).
func TestVectors(t *testing.T) {
	t.Run("identity", func(t *testing.T) { t.Parallel(); checkVector(t, "testdata/core-identity.json", genIdentityVector(t)) })
	t.Run("prekeys", func(t *testing.T) { t.Parallel(); checkVector(t, "testdata/core-prekeys.json", genPrekeyVector(t)) })
	t.Run("pqxdh", func(t *testing.T) { t.Parallel(); checkVector(t, "testdata/core-pqxdh.json", genPQXDHVector(t)) })
	t.Run("ratchet", func(t *testing.T) { t.Parallel(); checkVector(t, "testdata/core-ratchet.json", genRatchetVector(t)) })
}

// TestVectorsReplay checks the vectors from the files alone: it parses the
// recorded keys and states and replays the recorded operations, without
// regenerating anything from the seeds beyond what an operation draws.
func TestVectorsReplay(t *testing.T) {
	if *updateVectors {
		t.Skip("regenerating")
	}
	t.Run("identity", func(t *testing.T) {
		t.Parallel()
		var v identityVector
		loadJSON(t, "testdata/core-identity.json", &v)
		var id Identity
		if err := id.UnmarshalBinary(v.Private); err != nil {
			t.Fatal(err)
		}
		pub := PublicIdentity(v.Public)
		if id.Public() != pub || !pub.Verify([]byte(v.Message), v.Signature) {
			t.Fatal("identity or signature does not match")
		}
		if sk := pub.SignalKey(); !bytes.Equal(sk[:], v.SignalKey) {
			t.Fatalf("signal key: got %x, want %x", sk, []byte(v.SignalKey))
		}
	})
	t.Run("prekeys", func(t *testing.T) {
		t.Parallel()
		var v prekeyVector
		loadJSON(t, "testdata/core-prekeys.json", &v)
		var ps PrekeySet
		if err := ps.UnmarshalBinary(v.PrekeySet); err != nil {
			t.Fatal(err)
		}
		if recs := ps.Records(); !bytes.Equal(recs.Signed, v.SignedRecord) || !bytes.Equal(recs.LastResort, v.LastResortRecord) {
			t.Fatal("records of the parsed set differ")
		}
		// A relay assembles a bundle by concatenation.
		var id Identity
		if err := id.UnmarshalBinary(v.Identity); err != nil {
			t.Fatal(err)
		}
		pub := id.Public()
		assembled := append(append(append([]byte{bundleVersion}, pub[:]...), v.SignedRecord...), v.OneTimeRecords[0]...)
		assembled = append(assembled, v.KEMRecords[0]...)
		if !bytes.Equal(assembled, v.BundleOneTime) {
			t.Fatal("bundle is not the concatenation of its records")
		}
		for _, raw := range [][]byte{v.BundleOneTime, v.BundleLastResort} {
			b, err := ParseBundle(raw)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.verifyErr(); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("pqxdh", func(t *testing.T) {
		t.Parallel()
		var v pqxdhVector
		loadJSON(t, "testdata/core-pqxdh.json", &v)
		for _, c := range v.Cases {
			// The recorded SK, HKa and NHKb follow from the recorded DH
			// values and KEM secret by the PQXDH KDF (checked with crypto/hkdf).
			ikm := bytes.Repeat([]byte{0xff}, 32)
			for _, dh := range c.Intermediate.DH {
				ikm = append(ikm, dh...)
			}
			ikm = append(ikm, c.Intermediate.SharedSecret...)
			okm, err := hkdf.Key(sha256.New, ikm, nil, labelPQXDH, 96)
			if err != nil {
				t.Fatal(err)
			}
			if want := append(append(bytes.Clone(c.Intermediate.SK), c.Intermediate.HKa...), c.Intermediate.NHKb...); !bytes.Equal(okm, want) {
				t.Fatalf("%s: PQXDH KDF of the recorded inputs: got %x, want %x", c.Name, okm, want)
			}
			var bid Identity
			var ps PrekeySet
			if err := bid.UnmarshalBinary(c.BobIdentity); err != nil {
				t.Fatal(err)
			}
			if err := ps.UnmarshalBinary(c.BobPrekeySet); err != nil {
				t.Fatal(err)
			}
			// Bob's side from the recorded initial message; his Respond
			// draws one ratchet key, the stream's next 32 bytes after
			// everything before it. Re-derive that position by replaying
			// the draws of the earlier operations.
			r := newTestRand(c.Seed)
			skip := 32 + 32 + 32 + 64 + 32 + 64 + 32 + 32 + 32 // identities, prekeys (n=1), ephemeral, kem m, alice ratchet key
			r.Read(make([]byte, skip))
			bob, pt, _, err := Respond(r, &bid, &ps, c.InitialMessage, []byte(c.AD))
			if err != nil || string(pt) != c.Plaintext {
				t.Fatalf("%s: respond: %q, %v", c.Name, pt, err)
			}
			if got := stateBytes(t, bob); !bytes.Equal(got, c.BobState) {
				t.Fatalf("%s: bob's state differs", c.Name)
			}
			after, _ := ps.MarshalBinary()
			if !bytes.Equal(after, c.BobPrekeysAfter) {
				t.Fatalf("%s: prekey set after Respond differs", c.Name)
			}
			// Alice's recorded state decrypts Bob's reply.
			var alice Session
			if err := alice.UnmarshalBinary(c.AliceState); err != nil {
				t.Fatal(err)
			}
			alice.Rand = newTestRand("reply")
			reply, _ := bob.Encrypt([]byte("reply"), nil)
			mustDecrypt(t, &alice, reply, "reply")
		}
	})
	t.Run("ratchet", func(t *testing.T) {
		t.Parallel()
		var v ratchetVector
		loadJSON(t, "testdata/core-ratchet.json", &v)
		var alice, bob Session
		if err := alice.UnmarshalBinary(v.AliceState); err != nil {
			t.Fatal(err)
		}
		if err := bob.UnmarshalBinary(v.BobState); err != nil {
			t.Fatal(err)
		}
		alice.Rand, bob.Rand = newTestRand(v.AliceSeed), newTestRand(v.BobSeed)
		if len(v.Steps) != len(ratchetScript) {
			t.Fatalf("%d steps, want %d", len(v.Steps), len(ratchetScript))
		}
		runRatchetScript(t, &alice, &bob, v.Steps, false)
		if !bytes.Equal(stateBytes(t, &alice), v.AliceFinal) || !bytes.Equal(stateBytes(t, &bob), v.BobFinal) {
			t.Fatal("final states differ")
		}
	})
}
