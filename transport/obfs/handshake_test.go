package obfs

import (
	"bytes"
	"crypto/ecdh"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor"
)

var testNow = time.Date(2026, 11, 21, 22, 10, 0, 0, time.UTC)

func testRelayKey(t testing.TB, seed byte) (*keyPair, []byte) {
	t.Helper()
	priv, err := ecdh.X25519().NewPrivateKey(bytes.Repeat([]byte{seed}, 32))
	if err != nil {
		t.Fatal(err)
	}
	kp := &keyPair{priv: priv}
	copy(kp.pub[:], priv.PublicKey().Bytes())
	return kp, kp.pub[:]
}

var allShapes = func() []shape {
	s := []shape{{kind: 'l'}, {kind: 'h'}}
	for n := minPrefix; n <= maxPrefix; n++ {
		s = append(s, shape{kind: 'p', prefix: n})
	}
	return s
}()

// TestFirstPacketsPassFET judges 10,000 client hellos, over every shape,
// with package censor's fet rule at probability 1: none may be blocked.
func TestFirstPacketsPassFET(t *testing.T) {
	t.Parallel()
	pol, err := censor.ParsePolicy([]byte(`{"name":"fet-always","rules":[{"name":"fet","fet":{"probability":1}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	e := &censor.Engine{Policy: pol, Rand: seeded(9), Clock: &censor.FakeClock{}}
	defer e.Close()
	_, pub := testRelayKey(t, 1)
	rnd := seeded(10)
	server := netip.MustParseAddrPort("203.0.113.7:443")
	blocked := 0
	for i := range 10000 {
		sh := allShapes[i%len(allShapes)]
		h, err := newClientHello(rnd, pub, sh, testNow)
		if err != nil {
			t.Fatal(err)
		}
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 40000)
		if v := e.Inspect(censor.NewFlow(client, server, testNow, h.raw)); v.Action != censor.Pass {
			blocked++
			if blocked <= 3 {
				t.Errorf("hello %d (shape %s, %d bytes) blocked: %s", i, sh, len(h.raw), v.Evidence)
			}
		}
	}
	if blocked > 0 {
		t.Fatalf("%d of 10000 first packets blocked, want 0", blocked)
	}
}

// TestFETExemptMatchesCensor checks the client's own copy of the detector
// against package censor's on hellos and on random and crafted bytes.
func TestFETExemptMatchesCensor(t *testing.T) {
	rnd := seeded(11)
	_, pub := testRelayKey(t, 1)
	var inputs [][]byte
	for i := range 600 {
		b := make([]byte, 1+i%300)
		rnd.Read(b)
		switch i % 4 {
		case 1:
			for j := range min(len(b), 6) {
				b[j] = 'a' + byte(j)
			}
		case 2:
			for j := range b {
				b[j] &= 0x7f
			}
		case 3:
			h, err := newClientHello(rnd, pub, allShapes[i%len(allShapes)], testNow)
			if err != nil {
				t.Fatal(err)
			}
			b = h.raw
		}
		inputs = append(inputs, b)
	}
	inputs = append(inputs, []byte("GET /"), []byte{0x16, 3, 1, 0xff}, []byte{0x17, 3, 9}, nil)
	for _, b := range inputs {
		if got, want := fetExempt(b), censor.FETExemption(b) != ""; got != want {
			t.Fatalf("fetExempt(%x) = %v, censor says %v", b, got, want)
		}
	}
}

// TestHelloLengthsSpread checks that client and server hello lengths are
// spread evenly over [minHello, maxHello]: no length is more frequent than
// a binomial allows, and the histogram passes a chi-square test.
func TestHelloLengthsSpread(t *testing.T) {
	t.Parallel()
	relay, pub := testRelayKey(t, 2)
	rnd := seeded(12)
	kp, err := newKeyPair(rnd)
	if err != nil {
		t.Fatal(err)
	}
	k := maxHello - minHello + 1
	const nClient, nServer = 10000, 3000
	client, server := make([]int, k), make([]int, k)
	for i := range nClient {
		// Lengths do not depend on the key: one key pair serves all.
		raw, err := buildClientHello(rnd, pub, allShapes[i%len(allShapes)], testNow, kp)
		if err != nil {
			t.Fatal(err)
		}
		client[len(raw)-minHello]++
	}
	for range nServer {
		reply, _, err := serverHandshake(rnd, relay, nil, &kp.repr)
		if err != nil {
			t.Fatal(err)
		}
		server[len(reply)-minHello]++
	}
	for _, c := range []struct {
		name  string
		hist  []int
		n     int
		limit int // P(Binomial(n, 1/1073) >= limit) is below 1e-8 per length
	}{{"client", client, nClient, 30}, {"server", server, nServer, 15}} {
		mean := float64(c.n) / float64(k)
		chi, most := 0.0, 0
		for _, v := range c.hist {
			chi += (float64(v) - mean) * (float64(v) - mean) / mean
			most = max(most, v)
		}
		if most >= c.limit {
			t.Errorf("%s hellos: one length occurs %d times in %d, want < %d", c.name, most, c.n, c.limit)
		}
		// Chi-square over 1073 lengths: mean 1072, variance about
		// 1072 (2 + 1/mean) for Poisson counts.
		if sd := math.Sqrt(1072 * (2 + 1/mean)); chi > 1072+6*sd {
			t.Errorf("%s hellos: chi-square %.0f over %d lengths, want about %d", c.name, chi, k, k-1)
		}
	}
}

// TestNoSharedBytes checks that hellos to one relay share no bytes beyond
// their shape: at every offset, the byte values over many hellos are
// spread as random bytes are (printable ones inside a prefix).
func TestNoSharedBytes(t *testing.T) {
	t.Parallel()
	_, pub := testRelayKey(t, 3)
	for _, sh := range []shape{{kind: 'p', prefix: 11}, {kind: 'l'}, {kind: 'h'}} {
		rnd := seeded(13)
		const n = 2000
		var counts [minHello][256]int
		for range n {
			h, err := newClientHello(rnd, pub, sh, testNow)
			if err != nil {
				t.Fatal(err)
			}
			for i := range minHello {
				counts[i][h.raw[i]]++
			}
		}
		for off := range minHello {
			most := 0
			for _, c := range counts[off] {
				most = max(most, c)
			}
			// Uniform over 95 printable values: mean 21; over 256: mean 8.
			// The padding of the popcount shapes has independent bits set
			// with probability 1/4 (lo) or 3/4 (hi), its exemption: the
			// commonest value (0x00 or 0xff) has probability (3/4)^8, 10%.
			limit := 60
			if sh.kind != 'p' && off >= reprLen {
				limit = int(n*math.Pow(0.75, 8) + 6*math.Sqrt(n*0.1))
			}
			if most > limit {
				t.Errorf("shape %s: one value at offset %d in %d of %d hellos", sh, off, most, n)
			}
		}
	}
}

// handshakePair runs a whole handshake in memory and returns the client's
// and the relay's session keys.
func handshakePair(t *testing.T, sh shape) (client, server *sessionKeys, hello []byte) {
	t.Helper()
	relay, pub := testRelayKey(t, 4)
	rnd := seeded(14)
	h, err := newClientHello(rnd, pub, sh, testNow)
	if err != nil {
		t.Fatal(err)
	}
	st, repr, _ := parseClientHello(h.raw, pub, testNow)
	if st != helloOK {
		t.Fatalf("relay does not take an authentic hello (shape %s): status %d", sh, st)
	}
	reply, sk, err := serverHandshake(rnd, relay, h.raw, &repr)
	if err != nil {
		t.Fatal(err)
	}
	st, ck, used, err := h.finish(append(reply, 1, 2, 3), pub)
	if st != helloOK || err != nil || used != len(reply) {
		t.Fatalf("client does not take the relay's hello: status %d, used %d of %d, %v", st, used, len(reply), err)
	}
	return ck, sk, h.raw
}

func TestHandshakeAgrees(t *testing.T) {
	for _, sh := range allShapes {
		t.Run(sh.String(), func(t *testing.T) {
			ck, sk, _ := handshakePair(t, sh)
			if !bytes.Equal(ck.c2s, sk.c2s) || !bytes.Equal(ck.s2c, sk.s2c) {
				t.Fatal("client and relay derived different keys")
			}
		})
	}
}

// TestHelloRejections covers what the relay must not answer: changed
// bytes anywhere, another relay's key, an old hour, trailing bytes, and
// anything without a mark in the first 1200 bytes.
func TestHelloRejections(t *testing.T) {
	_, pub := testRelayKey(t, 5)
	_, other := testRelayKey(t, 6)
	rnd := seeded(15)
	h, err := newClientHello(rnd, pub, shape{kind: 'p', prefix: 8}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, buf, key []byte, now time.Time, want helloStatus) {
		t.Helper()
		if st, _, _ := parseClientHello(buf, key, now); st != want {
			t.Errorf("%s: status %d, want %d", name, st, want)
		}
	}
	check("authentic", h.raw, pub, testNow, helloOK)
	check("an hour later", h.raw, pub, testNow.Add(time.Hour), helloOK)
	check("two hours later", h.raw, pub, testNow.Add(2*time.Hour), helloBad)
	check("another relay", h.raw, other, testNow, helloMore)
	check("trailing byte", append(append([]byte(nil), h.raw...), 0), pub, testNow, helloBad)
	check("truncated", h.raw[:len(h.raw)-1], pub, testNow, helloMore)
	for _, off := range []int{0, 7, 8, 20, 39, 40, len(h.raw) - 33, len(h.raw) - 1} {
		b := append([]byte(nil), h.raw...)
		b[off] ^= 0x41
		st, _, _ := parseClientHello(b, pub, testNow)
		if st == helloOK {
			t.Errorf("byte %d changed: accepted", off)
		}
	}
	check("1200 random bytes", bytes.Repeat([]byte{0x5a}, maxHello), pub, testNow, helloBad)
}

func TestReplayFilter(t *testing.T) {
	f := newReplayFilter(3)
	m := func(i byte) []byte { return bytes.Repeat([]byte{i}, markLen) }
	if f.seen(m(1), testNow) {
		t.Fatal("first sight reported as a replay")
	}
	if !f.seen(m(1), testNow.Add(time.Hour)) {
		t.Fatal("replay within the window not caught")
	}
	if f.seen(m(1), testNow.Add(replayWindow+time.Second)) {
		t.Fatal("mark remembered past the window")
	}
	for i := byte(2); i < 6; i++ {
		f.seen(m(i), testNow.Add(replayWindow+2*time.Second))
	}
	if len(f.seenM) > 3 || len(f.queue) > 3 {
		t.Fatalf("filter holds %d marks, %d queued; limit 3", len(f.seenM), len(f.queue))
	}
}

func TestShapeParse(t *testing.T) {
	for _, s := range allShapes {
		got, err := parseShape(s.String())
		if err != nil || got != s {
			t.Errorf("parseShape(%q) = %v, %v", s.String(), got, err)
		}
	}
	for _, bad := range []string{"", "p", "p5", "p17", "p06", "px", "lo ", "HI", "p100"} {
		if _, err := parseShape(bad); err == nil {
			t.Errorf("parseShape(%q) succeeded", bad)
		}
	}
	kinds := map[byte]int{}
	for i := range 300 {
		kinds[shapeFor([]byte(fmt.Sprint(i))).kind]++
	}
	for _, k := range []byte("lhp") {
		if c := kinds[k]; math.Abs(float64(c)-100) > 40 {
			t.Errorf("shape kind %c for %d of 300 keys, want about 100", k, c)
		}
	}
}

type handshakeVector struct {
	Source      string `json:"source"`
	RelayKey    string `json:"relay_private_key"`
	RelayPub    string `json:"relay_public_key"`
	Time        string `json:"time"`
	Shape       string `json:"fet"`
	ClientSeed  string `json:"client_key_seed"` // 32-byte secret || selector byte
	ClientHello string `json:"client_hello"`
	ServerSeed  string `json:"server_key_seed"`
	ServerHello string `json:"server_hello"`
	C2S         string `json:"client_to_server_keys"`
	S2C         string `json:"server_to_client_keys"`
	Payload     string `json:"frame0_payload"`
	Padding     int    `json:"frame0_padding"`
	Frame       string `json:"frame0_client_to_server"`
}

func TestHandshakeVector(t *testing.T) {
	path := filepath.Join("testdata", "handshake.json")
	if *update {
		relay, pub := testRelayKey(t, 0x42)
		rnd := seeded(30)
		var cs, ss [33]byte
		var ckp *keyPair
		for ok := false; !ok; ckp, ok = keyPairFrom(&cs) {
			rnd.Read(cs[:])
		}
		for ok := false; !ok; _, ok = keyPairFrom(&ss) {
			rnd.Read(ss[:])
		}
		raw, err := buildClientHello(rnd, pub, shape{kind: 'p', prefix: 9}, testNow, ckp)
		if err != nil {
			t.Fatal(err)
		}
		// The relay's ephemeral key comes first from its randomness.
		reply, keys, err := serverHandshake(io.MultiReader(bytes.NewReader(ss[:]), rnd), relay, raw, &ckp.repr)
		if err != nil {
			t.Fatal(err)
		}
		v := handshakeVector{
			Source:   "generated by TestHandshakeVector -update in package transport/obfs; docs/transports.md sections 5.3-5.5",
			RelayKey: hex.EncodeToString(relay.priv.Bytes()), RelayPub: hex.EncodeToString(pub),
			Time: testNow.Format(time.RFC3339), Shape: "p9",
			ClientSeed: hex.EncodeToString(cs[:]), ClientHello: hex.EncodeToString(raw),
			ServerSeed: hex.EncodeToString(ss[:]), ServerHello: hex.EncodeToString(reply),
			C2S: hex.EncodeToString(keys.c2s), S2C: hex.EncodeToString(keys.s2c),
			Payload: hex.EncodeToString([]byte("ferry")), Padding: 10,
		}
		v.Frame = hex.EncodeToString(sealOne(t, keys.c2s, []byte("ferry"), 10))
		writeJSON(t, path, v)
	}
	var v handshakeVector
	readJSON(t, path, &v)
	now, err := time.Parse(time.RFC3339, v.Time)
	if err != nil {
		t.Fatal(err)
	}
	pub, hello, reply := mustHex(t, v.RelayPub), mustHex(t, v.ClientHello), mustHex(t, v.ServerHello)
	var cs, ss [33]byte
	copy(cs[:], mustHex(t, v.ClientSeed))
	copy(ss[:], mustHex(t, v.ServerSeed))
	ckp, ok1 := keyPairFrom(&cs)
	skp, ok2 := keyPairFrom(&ss)
	if !ok1 || !ok2 {
		t.Fatal("vector key seeds have no representative")
	}
	// Relay side: the hello is authentic and carries the client's key.
	st, repr, _ := parseClientHello(hello, pub, now)
	if st != helloOK || repr != ckp.repr {
		t.Fatalf("relay: status %d, representative %x, want ok and %x", st, repr, ckp.repr)
	}
	if !bytes.Equal(reply[:reprLen], skp.repr[:]) {
		t.Fatal("server hello does not start with the relay's representative")
	}
	relayPriv, err := ecdh.X25519().NewPrivateKey(mustHex(t, v.RelayKey))
	if err != nil {
		t.Fatal(err)
	}
	x := decodeRepr(&repr)
	s1, _ := x25519(skp.priv, x[:])
	s2, _ := x25519(relayPriv, x[:])
	rk, err := deriveKeys(s1, s2, pub, hello, reply[:reprLen])
	if err != nil {
		t.Fatal(err)
	}
	// Client side: the relay's hello checks out and gives the same keys.
	c := &clientHello{kp: ckp, raw: hello}
	st, ck, used, err := c.finish(reply, pub)
	if st != helloOK || err != nil || used != len(reply) {
		t.Fatalf("client: status %d, used %d of %d, %v", st, used, len(reply), err)
	}
	for _, k := range []struct {
		name      string
		got, want []byte
	}{
		{"client c2s", ck.c2s, mustHex(t, v.C2S)}, {"client s2c", ck.s2c, mustHex(t, v.S2C)},
		{"relay c2s", rk.c2s, mustHex(t, v.C2S)}, {"relay s2c", rk.s2c, mustHex(t, v.S2C)},
		{"frame 0", sealOne(t, ck.c2s, mustHex(t, v.Payload), v.Padding), mustHex(t, v.Frame)},
	} {
		if !bytes.Equal(k.got, k.want) {
			t.Errorf("%s = %x, want %x", k.name, k.got, k.want)
		}
	}
}

// sealOne returns frame 0 of a direction with keys k.
func sealOne(t *testing.T, k, payload []byte, padLen int) []byte {
	t.Helper()
	c, err := newConn(nil, k, k, [32]byte{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.seal(nil, payload, padLen)
}
