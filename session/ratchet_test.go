package session

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"testing"
)

func mustEncrypt(t testing.TB, s *Session, pt string) []byte {
	t.Helper()
	m, err := s.Encrypt([]byte(pt), nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustDecrypt(t testing.TB, s *Session, m []byte, want string) {
	t.Helper()
	pt, err := s.Decrypt(m, nil)
	if err != nil {
		t.Fatalf("decrypt %q: %v", want, err)
	}
	if string(pt) != want {
		t.Fatalf("got %q, want %q", pt, want)
	}
}

func stateBytes(t testing.TB, s *Session) []byte {
	t.Helper()
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRatchetPingPong(t *testing.T) {
	t.Parallel()
	alice, bob := newPair(t, newTestRand("ping pong"))
	for round := range 20 {
		for i := range round % 4 {
			m := mustEncrypt(t, alice, fmt.Sprintf("a%d.%d", round, i))
			mustDecrypt(t, bob, m, fmt.Sprintf("a%d.%d", round, i))
		}
		for i := range (round + 1) % 3 {
			m := mustEncrypt(t, bob, fmt.Sprintf("b%d.%d", round, i))
			mustDecrypt(t, alice, m, fmt.Sprintf("b%d.%d", round, i))
		}
	}
}

func TestRatchetHeaderHidesKeysAndCounters(t *testing.T) {
	t.Parallel()
	alice, bob := newPair(t, newTestRand("header hiding"))
	mustDecrypt(t, alice, mustEncrypt(t, bob, "r"), "r")
	m1 := mustEncrypt(t, alice, "x")
	m2 := mustEncrypt(t, alice, "x")
	pub := alice.st.dhs.PublicKey().Bytes()
	for _, m := range [][]byte{m1, m2} {
		if bytes.Contains(m, pub) {
			t.Fatal("message contains the ratchet public key in clear")
		}
	}
	// Two messages of the same chain share no header bytes beyond chance.
	same := 0
	for i := 1; i < 1+encHeaderLen; i++ {
		if m1[i] == m2[i] {
			same++
		}
	}
	if same > 8 {
		t.Fatalf("%d of %d encrypted header bytes equal across two messages", same, encHeaderLen)
	}
}

func TestRatchetOutOfOrder(t *testing.T) {
	t.Parallel()
	for seed := range uint64(10) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			alice, bob := newPair(t, newTestRand(fmt.Sprint("out of order ", seed)))
			rng := mrand.New(mrand.NewPCG(seed, 1))
			// Alice sends three chains (bob replies in between, which
			// ratchets), bob receives all of them in a random order.
			type msg struct {
				b    []byte
				want string
			}
			var msgs []msg
			for chain := range 3 {
				for i := range 1 + rng.IntN(20) {
					s := fmt.Sprintf("c%d m%d", chain, i)
					msgs = append(msgs, msg{mustEncrypt(t, alice, s), s})
				}
				r := mustEncrypt(t, bob, fmt.Sprint("reply ", chain))
				mustDecrypt(t, alice, r, fmt.Sprint("reply ", chain))
			}
			rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
			for _, m := range msgs {
				mustDecrypt(t, bob, m.b, m.want)
			}
			if bob.st.nSkipped != 0 {
				t.Fatalf("%d skipped keys left after every message arrived", bob.st.nSkipped)
			}
			// Every message again: all replays.
			for _, m := range msgs {
				if _, err := bob.Decrypt(m.b, nil); !errors.Is(err, ErrDecrypt) {
					t.Fatalf("replay of %q: got %v, want ErrDecrypt", m.want, err)
				}
			}
		})
	}
}

func TestRatchetReplay(t *testing.T) {
	t.Parallel()
	alice, bob := newPair(t, newTestRand("replay"))
	m0 := mustEncrypt(t, alice, "0")
	m1 := mustEncrypt(t, alice, "1")
	m2 := mustEncrypt(t, alice, "2")
	mustDecrypt(t, bob, m2, "2") // m0, m1 skipped
	mustDecrypt(t, bob, m0, "0") // from the skipped keys
	for name, m := range map[string][]byte{"in order": m2, "skipped": m0} {
		before := stateBytes(t, bob)
		if _, err := bob.Decrypt(m, nil); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("replay %s: got %v, want ErrDecrypt", name, err)
		}
		if !bytes.Equal(before, stateBytes(t, bob)) {
			t.Fatalf("replay %s changed the state", name)
		}
	}
	mustDecrypt(t, bob, m1, "1")
}

func TestRatchetMaxSkip(t *testing.T) {
	t.Parallel()
	alice, bob := newPair(t, newTestRand("max skip"))
	// Within the current chain.
	var last []byte
	for range MaxSkip + 2 { // the last one skips MaxSkip+1 keys
		last = mustEncrypt(t, alice, "x")
	}
	before := stateBytes(t, bob)
	if _, err := bob.Decrypt(last, nil); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("message %d ahead: got %v, want ErrDecrypt", MaxSkip+1, err)
	}
	if !bytes.Equal(before, stateBytes(t, bob)) {
		t.Fatal("too-far message changed the state")
	}
	next := mustEncrypt(t, alice, "y") // MaxSkip+2 ahead: fails too
	if _, err := bob.Decrypt(next, nil); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("got %v, want ErrDecrypt", err)
	}

	// Exactly MaxSkip ahead works.
	alice, bob = newPair(t, newTestRand("max skip exact"))
	for range MaxSkip {
		mustEncrypt(t, alice, "x")
	}
	mustDecrypt(t, bob, mustEncrypt(t, alice, "edge"), "edge")
	if bob.st.nSkipped != MaxSkip {
		t.Fatalf("stored %d skipped keys, want %d", bob.st.nSkipped, MaxSkip)
	}

	// Over a ratchet step: the previous chain's remainder counts too.
	alice, bob = newPair(t, newTestRand("max skip pn"))
	for range MaxSkip + 1 {
		mustEncrypt(t, alice, "lost")
	}
	mustDecrypt(t, alice, mustEncrypt(t, bob, "r"), "r")
	m := mustEncrypt(t, alice, "new chain") // PN = MaxSkip+2 in bob's view
	before = stateBytes(t, bob)
	if _, err := bob.Decrypt(m, nil); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("PN too far ahead: got %v, want ErrDecrypt", err)
	}
	if !bytes.Equal(before, stateBytes(t, bob)) {
		t.Fatal("too-far message changed the state")
	}
}

func TestRatchetSkippedEviction(t *testing.T) {
	t.Parallel()
	alice, bob := newPair(t, newTestRand("eviction"))
	// Three chains of 900 lost messages each, then one delivered: 2700
	// skipped keys, of which the oldest 700 are evicted.
	var first [][]byte
	for chain := range 3 {
		for i := range 900 {
			m := mustEncrypt(t, alice, fmt.Sprintf("%d.%d", chain, i))
			if i < 2 {
				first = append(first, m)
			}
		}
		mustDecrypt(t, bob, mustEncrypt(t, alice, "last"), "last")
		mustDecrypt(t, alice, mustEncrypt(t, bob, "r"), "r")
		if want := min(900*(chain+1), MaxSkippedKeys); bob.st.nSkipped != want {
			t.Fatalf("chain %d: %d skipped keys stored, want %d", chain, bob.st.nSkipped, want)
		}
	}
	// The first chain's first messages were evicted; the second chain's kept.
	if _, err := bob.Decrypt(first[0], nil); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("evicted key: got %v, want ErrDecrypt", err)
	}
	mustDecrypt(t, bob, first[2], "1.0")
	mustDecrypt(t, bob, first[4], "2.0")
	if got := bob.st.nSkipped; got != MaxSkippedKeys-2 {
		t.Fatalf("%d skipped keys after two used, want %d", got, MaxSkippedKeys-2)
	}
}

// TestRatchetSkippedChainBound: keys of at most MaxSkippedChains receiving
// chains are kept; the oldest chain's go first.
func TestRatchetSkippedChainBound(t *testing.T) {
	t.Parallel()
	alice, bob := newPair(t, newTestRand("chain bound"))
	var lost [][]byte
	for range MaxSkippedChains + 2 {
		lost = append(lost, mustEncrypt(t, alice, "lost"))
		mustDecrypt(t, bob, mustEncrypt(t, alice, "x"), "x")
		mustDecrypt(t, alice, mustEncrypt(t, bob, "y"), "y")
	}
	if len(bob.st.skipped) != MaxSkippedChains || bob.st.nSkipped != MaxSkippedChains {
		t.Fatalf("%d chains, %d keys kept, want %d and %d", len(bob.st.skipped), bob.st.nSkipped, MaxSkippedChains, MaxSkippedChains)
	}
	for i, m := range lost {
		_, err := bob.Decrypt(m, nil)
		if evicted := i < 2; evicted != (err != nil) {
			t.Fatalf("lost message %d: got %v, evicted %v", i, err, evicted)
		}
	}
}

// TestFailedDecryptChangesNothing flips every bit position class, truncates
// and extends messages of each kind (in-chain, skipped, ratchet step,
// initial) and checks that the serialised state is byte-for-byte unchanged.
func TestFailedDecryptChangesNothing(t *testing.T) {
	t.Parallel()
	alice, bob := newPair(t, newTestRand("failed decrypt"))
	skipped := mustEncrypt(t, alice, "skipped")
	inChain := mustEncrypt(t, alice, "in chain")
	mustDecrypt(t, bob, inChain, "in chain")
	inChain2 := mustEncrypt(t, alice, "in chain 2")
	mustDecrypt(t, alice, mustEncrypt(t, bob, "r"), "r")
	step := mustEncrypt(t, alice, "step") // needs a DH ratchet at bob
	cases := map[string][]byte{"skipped": skipped, "in chain": inChain2, "ratchet step": step}
	for name, m := range cases {
		for _, bad := range mutations(m) {
			before := stateBytes(t, bob)
			if pt, err := bob.Decrypt(bad, nil); err == nil {
				t.Fatalf("%s: mutated message decrypted to %q", name, pt)
			}
			if !bytes.Equal(before, stateBytes(t, bob)) {
				t.Fatalf("%s: failed decryption changed the state", name)
			}
		}
		before := stateBytes(t, bob)
		if _, err := bob.Decrypt(m, []byte("wrong ad")); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("%s with wrong ad: got %v, want ErrDecrypt", name, err)
		}
		if !bytes.Equal(before, stateBytes(t, bob)) {
			t.Fatalf("%s: wrong-ad decryption changed the state", name)
		}
	}
	// The originals still decrypt afterwards.
	mustDecrypt(t, bob, skipped, "skipped")
	mustDecrypt(t, bob, inChain2, "in chain 2")
	mustDecrypt(t, bob, step, "step")
}

// mutations returns copies of m with one bit flipped at a spread of
// positions, truncated, and extended.
func mutations(m []byte) [][]byte {
	var out [][]byte
	for i := 0; i < len(m); i += 1 + i/16 {
		for _, bit := range []byte{0x01, 0x80} {
			b := bytes.Clone(m)
			b[i] ^= bit
			out = append(out, b)
		}
	}
	for _, n := range []int{0, 1, ratchetOverhead - 1, len(m) - 1} {
		if n >= 0 && n < len(m) {
			out = append(out, bytes.Clone(m[:n]))
		}
	}
	return append(out, append(bytes.Clone(m), 0))
}

// FuzzDecrypt feeds arbitrary messages to a session: Decrypt never panics,
// and when it fails the state is unchanged. The seeds are the vector's
// messages, so mutations explore near-valid headers and bodies.
func FuzzDecrypt(f *testing.F) {
	var v ratchetVector
	loadJSON(f, "testdata/core-ratchet.json", &v)
	var bases [][]byte
	var toBob []bool
	for _, st := range v.Steps {
		if st.Op == "encrypt" {
			bases, toBob = append(bases, []byte(st.Bytes)), append(toBob, st.Party == "alice")
		}
	}
	// The input is a patch of a vector message (mutate), a few bytes long
	// however long the message: the fuzzer's minimisation of each new
	// input then costs little, so short runs fuzz instead of minimising.
	for i := range bases {
		f.Add(uint8(i), uint16(0), []byte(nil), uint16(0))
		f.Add(uint8(i), uint16(i*7), []byte{1}, uint16(0))
	}
	f.Fuzz(func(t *testing.T, base uint8, off uint16, patch []byte, cut uint16) {
		i := int(base) % len(bases)
		msg := mutate(bases[i], off, patch, cut)
		var s Session
		state := v.AliceState
		if toBob[i] {
			state = v.BobState
		}
		if err := s.UnmarshalBinary(state); err != nil {
			t.Fatal(err)
		}
		s.Rand = newTestRand("fuzz decrypt")
		if _, err := s.Decrypt(msg, nil); err != nil {
			if !bytes.Equal(stateBytes(t, &s), state) {
				t.Fatal("failed decryption changed the state")
			}
		}
	})
}

// mutate makes a fuzz input from a valid message base: patch XORed into
// a copy at off (modulo the length; what runs past the end is appended),
// then, if cut is positive, the first cut-1 bytes only. Fuzzing the patch
// rather than the whole message keeps the fuzzer's inputs small, and so
// its minimisation of a new input cheap, however long base is.
func mutate(base []byte, off uint16, patch []byte, cut uint16) []byte {
	m := bytes.Clone(base)
	o := int(off) % (len(m) + 1)
	for j, p := range patch {
		if o+j < len(m) {
			m[o+j] ^= p
		} else {
			m = append(m, p)
		}
	}
	if c := int(cut); c > 0 && c-1 < len(m) {
		m = m[:c-1]
	}
	return m
}

// TestForwardSecrecy: once a message key is used and the chain has moved
// on, no later state holds the keys that decrypted it (chain key, message
// key seed, cipher key, previous root and ratchet keys), and no later state
// can decrypt the message.
func TestForwardSecrecy(t *testing.T) {
	t.Parallel()
	alice, bob := newPair(t, newTestRand("forward secrecy"))
	mustDecrypt(t, alice, mustEncrypt(t, bob, "r"), "r")
	m1 := mustEncrypt(t, alice, "first") // new chain at bob
	m2 := mustEncrypt(t, alice, "second")
	m3 := mustEncrypt(t, alice, "third")
	oldRoot, oldDH := bob.st.rk, bob.st.dhs.Bytes()
	mustDecrypt(t, bob, m1, "first")
	// The keys of m2, from bob's chain key before he receives it.
	ck := bob.st.ckr
	seed, _ := kdfCK(&ck)
	mk := deriveMessageKeys(&seed)
	mustDecrypt(t, bob, m3, "third") // m2's key is now a stored skipped key
	if !bytes.Contains(stateBytes(t, bob), seed[:]) {
		t.Fatal("test setup: the skipped key of m2 is not in the state")
	}
	mustDecrypt(t, bob, m2, "second")
	secrets := map[string][]byte{"chain key": ck[:], "seed": seed[:], "cipher key": mk.cipherKey[:], "old root": oldRoot[:], "old ratchet key": oldDH}
	later := [][]byte{stateBytes(t, bob)}
	for range 3 {
		mustDecrypt(t, bob, mustEncrypt(t, alice, "x"), "x")
		mustDecrypt(t, alice, mustEncrypt(t, bob, "y"), "y")
		later = append(later, stateBytes(t, bob))
	}
	for i, st := range later {
		for name, sec := range secrets {
			if bytes.Contains(st, sec) {
				t.Fatalf("later state %d still holds the %s", i, name)
			}
		}
		for _, m := range [][]byte{m1, m2, m3} {
			var s Session
			if err := s.UnmarshalBinary(st); err != nil {
				t.Fatal(err)
			}
			s.Rand = newTestRand("attacker")
			if _, err := s.Decrypt(m, nil); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("later state %d decrypts an old message: got %v, want ErrDecrypt", i, err)
			}
		}
	}
}

// TestPostCompromiseSecurity: an attacker who copies a party's whole state
// (just after that party sent) keeps reading the peer's messages, following
// the protocol with the copy, only until one ratchet round trip: the peer's
// message with a new ratchet key makes the victim draw a fresh one, the
// victim sends with it, and from the peer's reply on the copy decrypts
// nothing. Run with each party as the victim.
func TestPostCompromiseSecurity(t *testing.T) {
	t.Parallel()
	for seed := range 4 {
		for _, victimIsAlice := range []bool{true, false} {
			alice, bob := newPair(t, newTestRand(fmt.Sprint("pcs ", seed)))
			mustDecrypt(t, alice, mustEncrypt(t, bob, "r"), "r")
			mustDecrypt(t, bob, mustEncrypt(t, alice, "s"), "s")
			victim, peer := alice, bob
			if !victimIsAlice {
				victim, peer = bob, alice
			}
			// The victim sent last, so the peer's next message carries a
			// new ratchet key.
			mustDecrypt(t, peer, mustEncrypt(t, victim, "last"), "last")
			stolen := cloneSession(t, victim)
			// Before healing the copy is a real compromise: it reads the
			// peer's next message, which starts a new chain.
			p1 := mustEncrypt(t, peer, "p1")
			mustDecrypt(t, stolen, p1, "p1")
			mustDecrypt(t, victim, p1, "p1")
			// The victim answers with a ratchet key the copy never saw
			// (drawn from the victim's randomness); the peer's reply is
			// lost to the attacker, and so is everything after it.
			mustDecrypt(t, peer, mustEncrypt(t, victim, "v1"), "v1")
			p2 := mustEncrypt(t, peer, "p2")
			if _, err := stolen.Decrypt(p2, nil); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("seed %d: the stolen copy decrypts after a round trip: got %v", seed, err)
			}
			mustDecrypt(t, victim, p2, "p2")
			p3 := mustEncrypt(t, peer, "p3")
			if _, err := stolen.Decrypt(p3, nil); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("seed %d: the stolen copy decrypts later messages: got %v", seed, err)
			}
		}
	}
}

func cloneSession(t testing.TB, s *Session) *Session {
	t.Helper()
	c := &Session{Rand: newTestRand("clone")}
	if err := c.UnmarshalBinary(stateBytes(t, s)); err != nil {
		t.Fatal(err)
	}
	return c
}

// forgeForZeroState builds a ratchet message that a session whose state is
// all zeros would accept, as anyone can: every key it needs is zero or
// derived from zeros and the forger's own ephemeral key.
func forgeForZeroState(t *testing.T, pt string) []byte {
	t.Helper()
	var zero state
	eph, err := generateX25519(newTestRand("zero session forger"))
	if err != nil {
		t.Fatal(err)
	}
	victim, err := zero.dhsKey() // the clamped zero scalar
	if err != nil {
		t.Fatal(err)
	}
	dh, err := x25519(eph, victim.PublicKey().Bytes())
	if err != nil {
		t.Fatal(err)
	}
	_, ckr, _ := kdfRK(&zero.rk, dh)
	seed, _ := kdfCK(&ckr)
	mk := deriveMessageKeys(&seed)
	var hb [headerLen]byte
	copy(hb[:], eph.PublicKey().Bytes()) // PN = N = 0
	msg := append([]byte{msgRatchet}, mk.iv[:headerNonceLen]...)
	msg = mustAEAD(&zero.nhkr).Seal(msg, mk.iv[:headerNonceLen], hb[:], headerAD)
	ad := append(bytes.Clone(msg), zero.ad[:]...)
	return mustAEAD(&mk.cipherKey).Seal(msg, zeroNonce[:], []byte(pt), ad)
}

// TestZeroSession: the zero Session refuses to decrypt (even a message
// forged for its all-zero keys), encrypt or marshal, and an all-zero state
// does not load (review L1).
func TestZeroSession(t *testing.T) {
	t.Parallel()
	forged := forgeForZeroState(t, "forged")
	var s Session
	if pt, err := s.Decrypt(forged, nil); !errors.Is(err, errNoSession) {
		t.Errorf("zero Session decrypted a forged message: %q, %v; want errNoSession", pt, err)
	}
	if _, err := s.Encrypt([]byte("x"), nil); !errors.Is(err, errNoSession) {
		t.Errorf("zero Session encrypt: got %v, want errNoSession", err)
	}
	if _, err := s.MarshalBinary(); !errors.Is(err, errNoSession) {
		t.Errorf("zero Session marshal: got %v, want errNoSession", err)
	}
	// The encoding of an all-zero state: version, flags, 10 zero keys,
	// Ns, Nr, PN, no chains, no pending.
	zeroState := append([]byte{stateVersion, 0}, make([]byte, 10*keyLen+3*4+2+2)...)
	if err := s.UnmarshalBinary(zeroState); !errors.Is(err, ErrMalformed) {
		t.Errorf("unmarshal all-zero state: got %v, want ErrMalformed", err)
	}
	if pt, err := s.Decrypt(forged, nil); err == nil {
		t.Errorf("decrypted a forged message after a failed unmarshal: %q", pt)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestFailedDecryptReadsNoRandomness: a message that starts a DH ratchet
// step but fails (body modified, wrong ad) reads nothing from Session.Rand,
// so the next ratchet keys are the same as if it had never arrived
// (review L2). Both the responder's first step (inside Respond) and a later
// step are covered.
func TestFailedDecryptReadsNoRandomness(t *testing.T) {
	t.Parallel()
	alice, bob := newPair(t, newTestRand("no randomness on failure"))
	reply := mustEncrypt(t, bob, "reply") // starts a DH step at alice
	cr := &countingReader{r: newTestRand("alice's ratchet keys")}
	alice.Rand = cr
	tampered := bytes.Clone(reply)
	tampered[len(tampered)-1] ^= 1
	if _, err := alice.Decrypt(tampered, nil); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("tampered body: got %v, want ErrDecrypt", err)
	}
	if _, err := alice.Decrypt(reply, []byte("wrong ad")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong ad: got %v, want ErrDecrypt", err)
	}
	if cr.n != 0 {
		t.Fatalf("failed decryptions read %d bytes of randomness, want 0", cr.n)
	}
	mustDecrypt(t, alice, reply, "reply")
	if cr.n != keyLen {
		t.Fatalf("a DH ratchet step read %d bytes, want %d", cr.n, keyLen)
	}

	// Respond: an initial message with a modified body.
	a := newParty(t, newTestRand("respond party a"), 1)
	b := newParty(t, newTestRand("respond party b"), 1)
	s, err := Initiate(newTestRand("respond initiate"), a.id, b.ps.Bundle(b.id.Public(), true))
	if err != nil {
		t.Fatal(err)
	}
	m := mustEncrypt(t, s, "hi")
	m[len(m)-1] ^= 1
	rc := &countingReader{r: newTestRand("bob's ratchet keys")}
	if _, _, _, err := Respond(rc, b.id, b.ps, m, nil); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("respond to tampered message: got %v, want ErrDecrypt", err)
	}
	if rc.n != 0 {
		t.Fatalf("failed Respond read %d bytes of randomness, want 0", rc.n)
	}
}

// TestSkipSendingNeverReuses: a session restored from a copy taken before
// it sent some messages, once moved MaxSkip keys ahead, encrypts under
// keys none of those messages used, and the receiver still decrypts it.
func TestSkipSendingNeverReuses(t *testing.T) {
	t.Parallel()
	alice, bob := newPair(t, newTestRand("skip sending"))
	mustDecrypt(t, alice, mustEncrypt(t, bob, "r"), "r")
	backup := stateBytes(t, alice)
	for i := range 5 {
		m := mustEncrypt(t, alice, fmt.Sprint("after the backup ", i))
		mustDecrypt(t, bob, m, fmt.Sprint("after the backup ", i))
	}
	restored := &Session{Rand: newTestRand("restored")}
	if err := restored.UnmarshalBinary(backup); err != nil {
		t.Fatal(err)
	}
	// Without the skip, the restored copy reuses the first key: bob, who
	// used it, cannot decrypt (this is what the skip prevents).
	again := &Session{Rand: newTestRand("restored")}
	if err := again.UnmarshalBinary(backup); err != nil {
		t.Fatal(err)
	}
	reused, err := again.Encrypt([]byte("reused"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Decrypt(reused, nil); err == nil {
		t.Fatal("bob decrypted a message under a key he had used")
	}
	if err := restored.SkipSending(MaxSkip); err != nil {
		t.Fatal(err)
	}
	m, err := restored.Encrypt([]byte("after the restore"), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := bob.Decrypt(m, nil)
	if err != nil || string(got) != "after the restore" {
		t.Fatalf("bob got %q, %v; want the message after the restore", got, err)
	}
	if err := restored.SkipSending(MaxSkip + 1); err == nil {
		t.Fatal("SkipSending past MaxSkip succeeded")
	}
}
