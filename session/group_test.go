package session

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"testing"
)

// groupNet is a set of members, each with its own Group state; deliver
// stands in for the pairwise sessions.
type groupNet struct {
	t      testing.TB
	id     GroupID
	ids    map[PublicIdentity]*Identity
	groups map[PublicIdentity]*Group
}

func newGroupNet(t testing.TB, seed string, n int) (*groupNet, []PublicIdentity) {
	t.Helper()
	net := &groupNet{t: t, ids: map[PublicIdentity]*Identity{}, groups: map[PublicIdentity]*Group{}}
	copy(net.id[:], detBytes(seed+" group id", groupIDLen))
	var pubs []PublicIdentity
	for i := range n {
		id, err := NewIdentity(extrasDetRand(fmt.Sprintf("%s member %d", seed, i)))
		if err != nil {
			t.Fatal(err)
		}
		net.ids[id.Public()] = id
		pubs = append(pubs, id.Public())
	}
	for i, p := range pubs {
		others := append(append([]PublicIdentity(nil), pubs[:i]...), pubs[i+1:]...)
		g, err := NewGroup(extrasDetRand(fmt.Sprintf("%s sender key %d", seed, i)), net.id, p, others)
		if err != nil {
			t.Fatal(err)
		}
		net.groups[p] = g
	}
	for _, p := range pubs {
		net.distribute(p, net.groups[p].Distribution(), pubs)
	}
	return net, pubs
}

// distribute delivers from's distribution to each of to.
func (n *groupNet) distribute(from PublicIdentity, dist []byte, to []PublicIdentity) {
	n.t.Helper()
	for _, p := range to {
		if p == from {
			continue
		}
		if err := n.groups[p].ProcessDistribution(from, dist); err != nil {
			n.t.Fatalf("process distribution: %v", err)
		}
	}
}

func mustMarshal(t testing.TB, g *Group) []byte {
	t.Helper()
	b, err := g.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGroupSendReceive(t *testing.T) {
	t.Parallel()
	net, pubs := newGroupNet(t, "basic", 3)
	for _, from := range pubs {
		for i := range 3 {
			pt := []byte(fmt.Sprintf("message %d", i))
			msg, err := net.groups[from].Encrypt(pt)
			if err != nil {
				t.Fatal(err)
			}
			for _, to := range pubs {
				if to == from {
					continue
				}
				got, err := net.groups[to].Decrypt(from, msg)
				if err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("decrypt: %q, %v", got, err)
				}
			}
		}
	}
}

func TestGroupOutOfOrderAndReplay(t *testing.T) {
	t.Parallel()
	net, pubs := newGroupNet(t, "order", 2)
	a, b := net.groups[pubs[0]], net.groups[pubs[1]]
	var msgs [][]byte
	for i := range 20 {
		m, _ := a.Encrypt([]byte{byte(i)})
		msgs = append(msgs, m)
	}
	order := mrand.New(mrand.NewPCG(1, 2)).Perm(len(msgs))
	for _, i := range order {
		pt, err := b.Decrypt(pubs[0], msgs[i])
		if err != nil || !bytes.Equal(pt, []byte{byte(i)}) {
			t.Fatalf("message %d: %x, %v", i, pt, err)
		}
	}
	for i, m := range msgs {
		before := mustMarshal(t, b)
		if _, err := b.Decrypt(pubs[0], m); !errors.Is(err, ErrDecrypt) {
			t.Errorf("replay of %d: got %v, want ErrDecrypt", i, err)
		}
		if !bytes.Equal(before, mustMarshal(t, b)) {
			t.Fatalf("replay of %d changed the state", i)
		}
	}
	if n := len(b.members[pubs[0]].skipped); n != 0 {
		t.Errorf("%d skipped keys left after every message arrived", n)
	}
}

func TestGroupSkipBounds(t *testing.T) {
	t.Parallel()
	net, pubs := newGroupNet(t, "bounds", 2)
	a, b := net.groups[pubs[0]], net.groups[pubs[1]]
	var msgs [][]byte
	for i := range MaxGroupSkip + 10 {
		m, _ := a.Encrypt([]byte{byte(i)})
		msgs = append(msgs, m)
	}
	before := mustMarshal(t, b)
	if _, err := b.Decrypt(pubs[0], msgs[MaxGroupSkip+1]); !errors.Is(err, ErrDecrypt) {
		t.Errorf("%d ahead: got %v, want ErrDecrypt", MaxGroupSkip+1, err)
	}
	if !bytes.Equal(before, mustMarshal(t, b)) {
		t.Fatal("rejected message changed the state")
	}
	if _, err := b.Decrypt(pubs[0], msgs[MaxGroupSkip]); err != nil {
		t.Fatalf("%d ahead: %v", MaxGroupSkip, err)
	}
	if n := len(b.members[pubs[0]].skipped); n != MaxGroupSkip {
		t.Fatalf("%d skipped keys, want %d", n, MaxGroupSkip)
	}
	// Five more skipped keys push the five oldest out.
	if _, err := b.Decrypt(pubs[0], msgs[MaxGroupSkip+6]); err != nil {
		t.Fatal(err)
	}
	if n := len(b.members[pubs[0]].skipped); n != MaxGroupSkipped {
		t.Errorf("%d skipped keys, want %d", n, MaxGroupSkipped)
	}
	for i := range 5 {
		if _, err := b.Decrypt(pubs[0], msgs[i]); !errors.Is(err, ErrDecrypt) {
			t.Errorf("evicted message %d: got %v, want ErrDecrypt", i, err)
		}
	}
	for _, i := range []int{5, 100, MaxGroupSkip + 5} {
		if _, err := b.Decrypt(pubs[0], msgs[i]); err != nil {
			t.Errorf("kept message %d: %v", i, err)
		}
	}
}

func TestGroupRejects(t *testing.T) {
	t.Parallel()
	net, pubs := newGroupNet(t, "rejects", 3)
	a, b, c := net.groups[pubs[0]], net.groups[pubs[1]], net.groups[pubs[2]]
	msg, _ := a.Encrypt([]byte("from a"))
	t.Run("every byte", func(t *testing.T) {
		before := mustMarshal(t, b)
		for i := range msg {
			m := append([]byte(nil), msg...)
			m[i] ^= 0x10
			if _, err := b.Decrypt(pubs[0], m); err == nil {
				t.Fatalf("flip at %d accepted", i)
			}
		}
		if !bytes.Equal(before, mustMarshal(t, b)) {
			t.Fatal("rejected messages changed the state")
		}
	})
	t.Run("member forges another member", func(t *testing.T) {
		// c holds a's chain key and can encrypt as a, but cannot sign as a.
		ac := c.members[pubs[0]]
		mk, _ := groupStep(&ac.chainKey)
		forged := (&groupHeader{group: a.id, epoch: ac.epoch, keyID: ac.keyID, iteration: ac.iteration}).append(nil)
		forged = aesGCM(mk[:]).Seal(forged, make([]byte, 12), []byte("from a, really"), forged[:groupHeaderLen])
		forged = append(forged, ed25519.Sign(c.own.sigPriv, forged)...)
		before := mustMarshal(t, b)
		if _, err := b.Decrypt(pubs[0], forged); !errors.Is(err, ErrDecrypt) {
			t.Errorf("forged message: got %v, want ErrDecrypt", err)
		}
		if !bytes.Equal(before, mustMarshal(t, b)) {
			t.Fatal("forged message changed the state")
		}
	})
	t.Run("attributed to another member", func(t *testing.T) {
		if _, err := b.Decrypt(pubs[2], msg); !errors.Is(err, ErrNoSenderKey) {
			t.Errorf("a's message as c's: got %v, want ErrNoSenderKey", err)
		}
		outsider := mustIdentity(t, "rejects outsider").Public()
		if _, err := b.Decrypt(outsider, msg); err == nil {
			t.Error("message from a non-member accepted")
		}
	})
	t.Run("truncated", func(t *testing.T) {
		if _, err := b.Decrypt(pubs[0], msg[:groupMinMsgLen-1]); !errors.Is(err, ErrMalformed) {
			t.Errorf("got %v, want ErrMalformed", err)
		}
	})
	if pt, err := b.Decrypt(pubs[0], msg); err != nil || string(pt) != "from a" {
		t.Errorf("genuine message after rejects: %q, %v", pt, err)
	}
}

func TestGroupDistributionRules(t *testing.T) {
	t.Parallel()
	net, pubs := newGroupNet(t, "dist", 3)
	a, b := net.groups[pubs[0]], net.groups[pubs[1]]
	old := a.Distribution()
	if err := b.ProcessDistribution(pubs[0], old); err != nil {
		t.Errorf("resend: %v", err)
	}
	newer, err := a.Rotate(extrasDetRand("dist rotate"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ProcessDistribution(pubs[0], newer); err != nil {
		t.Fatal(err)
	}
	outsider, _ := NewIdentity(extrasDetRand("dist outsider"))
	other := *a
	other.id[0] ^= 1
	for _, c := range []struct {
		name string
		from PublicIdentity
		dist []byte
	}{
		{"older epoch", pubs[0], old},
		{"not a member", outsider.Public(), newer},
		{"another group", pubs[0], other.Distribution()},
		{"malformed", pubs[0], newer[:50]},
	} {
		before := mustMarshal(t, b)
		if err := b.ProcessDistribution(c.from, c.dist); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
		if !bytes.Equal(before, mustMarshal(t, b)) {
			t.Errorf("%s: state changed", c.name)
		}
	}
	// A message of the replaced epoch has no key any more.
	a2, _ := NewGroup(extrasDetRand("dist sender key 0"), net.id, pubs[0], pubs[1:])
	stale, _ := a2.Encrypt([]byte("old epoch"))
	if _, err := b.Decrypt(pubs[0], stale); !errors.Is(err, ErrNoSenderKey) {
		t.Errorf("old-epoch message: got %v, want ErrNoSenderKey", err)
	}
}

// TestGroupJoinerNoHistory: a member added later cannot read what was sent
// before it received the distribution.
func TestGroupJoinerNoHistory(t *testing.T) {
	t.Parallel()
	net, pubs := newGroupNet(t, "joiner", 2)
	a := net.groups[pubs[0]]
	before, _ := a.Encrypt([]byte("before"))
	d := mustIdentity(t, "joiner d").Public()
	gd, _ := NewGroup(extrasDetRand("joiner d key"), net.id, d, pubs)
	dist, err := a.AddMember(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := gd.ProcessDistribution(pubs[0], dist); err != nil {
		t.Fatal(err)
	}
	after, _ := a.Encrypt([]byte("after"))
	if _, err := gd.Decrypt(pubs[0], before); !errors.Is(err, ErrDecrypt) {
		t.Errorf("joiner read history: %v", err)
	}
	if pt, err := gd.Decrypt(pubs[0], after); err != nil || string(pt) != "after" {
		t.Errorf("joiner: %q, %v", pt, err)
	}
}

// TestGroupForwardedDistribution: a member who passes another member's
// distribution off as its own cannot get that member's messages attributed
// to it, nor block them.
func TestGroupForwardedDistribution(t *testing.T) {
	t.Parallel()
	id, _ := NewIdentity(extrasDetRand("forward a"))
	m, _ := NewIdentity(extrasDetRand("forward m"))
	bID, _ := NewIdentity(extrasDetRand("forward b"))
	a, mal, b := id.Public(), m.Public(), bID.Public()
	var gid GroupID
	ga, _ := NewGroup(extrasDetRand("forward a key"), gid, a, []PublicIdentity{mal, b})
	gb, _ := NewGroup(extrasDetRand("forward b key"), gid, b, []PublicIdentity{a, mal})
	if err := gb.ProcessDistribution(mal, ga.Distribution()); err != nil {
		t.Fatal(err)
	}
	if err := gb.ProcessDistribution(a, ga.Distribution()); err != nil {
		t.Fatalf("a's own distribution after the forgery: %v", err)
	}
	msg, _ := ga.Encrypt([]byte("from a"))
	if pt, err := gb.Decrypt(a, msg); err != nil || string(pt) != "from a" {
		t.Errorf("a's message: %q, %v", pt, err)
	}
}

// TestGroupRemovedMemberLockedOut is the property test: over random runs of
// sends, removals and additions, every remaining member reads every message,
// and no removed member reads anything sent after its removal.
func TestGroupRemovedMemberLockedOut(t *testing.T) {
	t.Parallel()
	for run := range 8 {
		t.Run(fmt.Sprint(run), func(t *testing.T) {
			t.Parallel()
			rng := mrand.New(mrand.NewPCG(uint64(run), 99))
			seed := fmt.Sprint("lockout ", run)
			net, active := newGroupNet(t, seed, 5)
			var removed []PublicIdentity
			joined := 0
			for step := range 60 {
				switch r := rng.IntN(10); {
				case r < 2 && len(active) > 2: // remove
					i := rng.IntN(len(active))
					gone := active[i]
					active = append(active[:i:i], active[i+1:]...)
					removed = append(removed, gone)
					for _, p := range active {
						before := net.groups[p].Epoch()
						d, err := net.groups[p].RemoveMember(extrasDetRand(fmt.Sprint(seed, step, p)), gone)
						if err != nil {
							t.Fatal(err)
						}
						if got := net.groups[p].Epoch(); got != before+1 {
							t.Fatalf("epoch after a removal: got %d, want %d", got, before+1)
						}
						net.distribute(p, d, active)
					}
				case r < 3: // add
					id, _ := NewIdentity(extrasDetRand(fmt.Sprint(seed, " joiner ", joined)))
					joined++
					p := id.Public()
					net.ids[p] = id
					g, err := NewGroup(extrasDetRand(fmt.Sprint(seed, " joiner key ", joined)), net.id, p, active)
					if err != nil {
						t.Fatal(err)
					}
					net.groups[p] = g
					for _, q := range active {
						d, err := net.groups[q].AddMember(p)
						if err != nil {
							t.Fatal(err)
						}
						net.distribute(q, d, []PublicIdentity{p})
					}
					active = append(active, p)
					net.distribute(p, g.Distribution(), active)
				default: // send
					from := active[rng.IntN(len(active))]
					pt := []byte(fmt.Sprint("step ", step))
					msg, err := net.groups[from].Encrypt(pt)
					if err != nil {
						t.Fatal(err)
					}
					for _, to := range active {
						if to == from {
							continue
						}
						if got, err := net.groups[to].Decrypt(from, msg); err != nil || !bytes.Equal(got, pt) {
							t.Fatalf("step %d: remaining member failed: %v", step, err)
						}
					}
					for _, to := range removed {
						if got, err := net.groups[to].Decrypt(from, msg); err == nil {
							t.Fatalf("step %d: removed member read %q", step, got)
						}
					}
				}
			}
			if len(removed) == 0 {
				t.Log("no removal in this run")
			}
		})
	}
}

func TestGroupStateRoundTrip(t *testing.T) {
	t.Parallel()
	net, pubs := newGroupNet(t, "state", 3)
	a, b := net.groups[pubs[0]], net.groups[pubs[1]]
	var msgs [][]byte
	for i := range 6 {
		m, _ := a.Encrypt([]byte{byte(i)})
		msgs = append(msgs, m)
	}
	b.Decrypt(pubs[0], msgs[4]) // leaves 4 skipped keys
	if _, err := b.AddMember(mustIdentity(t, "state joiner").Public()); err != nil {
		t.Fatal(err)
	}
	enc := mustMarshal(t, b)
	var b2 Group
	if err := b2.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustMarshal(t, &b2), enc) {
		t.Fatal("marshal(unmarshal(x)) != x")
	}
	for _, i := range []int{0, 3, 5} {
		pt, err := b2.Decrypt(pubs[0], msgs[i])
		if err != nil || pt[0] != byte(i) {
			t.Errorf("restored state, message %d: %v", i, err)
		}
	}
	// Both copies of b's own sender key continue identically.
	m1, _ := b.Encrypt([]byte("x"))
	m2, _ := b2.Encrypt([]byte("x"))
	if !bytes.Equal(m1, m2) {
		t.Error("restored sender key encrypts differently")
	}
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"truncated", enc[:len(enc)-1]},
		{"trailing", append(append([]byte(nil), enc...), 0)},
		{"version", append([]byte{9}, enc[1:]...)},
	} {
		var g Group
		if err := g.UnmarshalBinary(c.b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", c.name, err)
		}
	}
}

func mustIdentity(t testing.TB, seed string) *Identity {
	t.Helper()
	id, err := NewIdentity(extrasDetRand(seed))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// groupVectors is testdata/extras-group.json.
type groupVectors struct {
	Description      string   `json:"description"`
	GroupID          string   `json:"group_id"`
	AliceSeed        string   `json:"alice_seed"`            // identity = NewIdentity(extrasDetRand(seed))
	BobSeed          string   `json:"bob_seed"`              // likewise
	AliceKeySeed     string   `json:"alice_sender_key_seed"` // NewGroup's rand: key id(4) || chain key(32) || signing seed(32)
	BobKeySeed       string   `json:"bob_sender_key_seed"`
	AliceDist        string   `json:"alice_distribution"`
	Plaintexts       []string `json:"plaintexts"`
	Messages         []string `json:"messages"` // Alice's group messages, in order
	BobState         string   `json:"bob_state_before"`
	BobStateAfter    string   `json:"bob_state_after_last"` // after decrypting only the last message
	AliceStateAfter  string   `json:"alice_state_after"`
	RotateSeed       string   `json:"rotate_seed"`
	AliceRotatedDist string   `json:"alice_distribution_after_removing_bob"`
}

func genGroupVectors(t *testing.T) groupVectors {
	v := groupVectors{
		Description: "Group sender keys (docs/protocol.md section 3.5). Regenerate: go test ./session -run ExtrasVectors -update",
		AliceSeed:   "group vector alice", BobSeed: "group vector bob",
		AliceKeySeed: "group vector alice key", BobKeySeed: "group vector bob key",
		RotateSeed: "group vector rotate",
	}
	var id GroupID
	copy(id[:], detBytes("group vector id", groupIDLen))
	v.GroupID = hex.EncodeToString(id[:])
	alice, bob := mustIdentity(t, v.AliceSeed).Public(), mustIdentity(t, v.BobSeed).Public()
	ga, err := NewGroup(extrasDetRand(v.AliceKeySeed), id, alice, []PublicIdentity{bob})
	if err != nil {
		t.Fatal(err)
	}
	gb, err := NewGroup(extrasDetRand(v.BobKeySeed), id, bob, []PublicIdentity{alice})
	if err != nil {
		t.Fatal(err)
	}
	v.AliceDist = hex.EncodeToString(ga.Distribution())
	if err := gb.ProcessDistribution(alice, ga.Distribution()); err != nil {
		t.Fatal(err)
	}
	v.BobState = hex.EncodeToString(mustMarshal(t, gb))
	for _, p := range []string{"", "hello group", "third message"} {
		m, err := ga.Encrypt([]byte(p))
		if err != nil {
			t.Fatal(err)
		}
		v.Plaintexts = append(v.Plaintexts, hex.EncodeToString([]byte(p)))
		v.Messages = append(v.Messages, hex.EncodeToString(m))
	}
	if _, err := gb.Decrypt(alice, unhex(t, v.Messages[2])); err != nil {
		t.Fatal(err)
	}
	v.BobStateAfter = hex.EncodeToString(mustMarshal(t, gb))
	v.AliceStateAfter = hex.EncodeToString(mustMarshal(t, ga))
	d, err := ga.RemoveMember(extrasDetRand(v.RotateSeed), bob)
	if err != nil {
		t.Fatal(err)
	}
	v.AliceRotatedDist = hex.EncodeToString(d)
	return v
}

func verifyGroupVectors(t *testing.T, v groupVectors) {
	var b Group
	if err := b.UnmarshalBinary(unhex(t, v.BobState)); err != nil {
		t.Fatal(err)
	}
	alice := mustIdentity(t, v.AliceSeed).Public()
	for _, i := range []int{2, 0, 1} {
		pt, err := b.Decrypt(alice, unhex(t, v.Messages[i]))
		if err != nil || hex.EncodeToString(pt) != v.Plaintexts[i] {
			t.Errorf("message %d: %x, %v", i, pt, err)
		}
	}
	for _, st := range []string{v.BobStateAfter, v.AliceStateAfter} {
		var g Group
		if err := g.UnmarshalBinary(unhex(t, st)); err != nil || hex.EncodeToString(mustMarshal(t, &g)) != st {
			t.Errorf("state round trip: %v", err)
		}
	}
	for _, d := range []string{v.AliceDist, v.AliceRotatedDist} {
		if pd, err := parseDistribution(unhex(t, d)); err != nil || hex.EncodeToString(pd.marshal()) != d {
			t.Errorf("distribution round trip: %v", err)
		}
	}
}

func FuzzGroupDistribution(f *testing.F) {
	v := loadExtrasVectors[groupVectors](f, "group")
	f.Add(unhex(f, v.AliceDist))
	f.Add(unhex(f, v.AliceRotatedDist))
	var base Group
	if err := base.UnmarshalBinary(unhex(f, v.BobState)); err != nil {
		f.Fatal(err)
	}
	alice := mustIdentity(f, v.AliceSeed).Public()
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseDistribution(b)
		if err != nil {
			return
		}
		if got := d.marshal(); !bytes.Equal(got, b) {
			t.Fatalf("round trip: %x -> %x", b, got)
		}
		var g Group
		g.UnmarshalBinary(unhex(t, v.BobState))
		g.ProcessDistribution(alice, b)
	})
}

func FuzzGroupDecrypt(f *testing.F) {
	v := loadExtrasVectors[groupVectors](f, "group")
	for _, m := range v.Messages {
		f.Add(unhex(f, m))
	}
	state := unhex(f, v.BobState)
	alice := mustIdentity(f, v.AliceSeed).Public()
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := parseGroupMessage(b); err == nil {
			if got := h.append(nil); !bytes.Equal(got, b[:groupHeaderLen]) {
				t.Fatalf("header round trip: %x -> %x", b[:groupHeaderLen], got)
			}
		}
		var g Group
		if err := g.UnmarshalBinary(state); err != nil {
			t.Fatal(err)
		}
		if _, err := g.Decrypt(alice, b); err != nil {
			if !bytes.Equal(mustMarshal(t, &g), state) {
				t.Fatal("failed decrypt changed the state")
			}
		}
	})
}

func FuzzGroupState(f *testing.F) {
	v := loadExtrasVectors[groupVectors](f, "group")
	for _, s := range []string{v.BobState, v.BobStateAfter, v.AliceStateAfter} {
		f.Add(unhex(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var g Group
		if err := g.UnmarshalBinary(b); err != nil {
			return
		}
		if got := mustMarshal(t, &g); !bytes.Equal(got, b) {
			t.Fatalf("round trip: %x -> %x", b, got)
		}
	})
}

func ExampleGroup() {
	a, _ := NewIdentity(rand.Reader)
	b, _ := NewIdentity(rand.Reader)
	alice, bob := a.Public(), b.Public()
	var id GroupID
	rand.Read(id[:])
	ga, _ := NewGroup(rand.Reader, id, alice, []PublicIdentity{bob})
	gb, _ := NewGroup(rand.Reader, id, bob, []PublicIdentity{alice})

	// Each sends its distribution to the other over their pairwise session.
	gb.ProcessDistribution(alice, ga.Distribution())
	ga.ProcessDistribution(bob, gb.Distribution())

	msg, _ := ga.Encrypt([]byte("hello, group"))
	// The sender comes from the envelope or session the message arrived in.
	pt, err := gb.Decrypt(alice, msg)
	fmt.Println(string(pt), err)
	// Output: hello, group <nil>
}
