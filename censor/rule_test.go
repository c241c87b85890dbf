package censor

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// seeded returns a reproducible random source.
func seeded(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return rand.NewChaCha8(s)
}

// randomBytes returns n bytes from r.
func randomBytes(r io.Reader, n int) []byte {
	b := make([]byte, n)
	_, _ = io.ReadFull(r, b)
	return b
}

// mustPolicy parses a policy or fails the test.
func mustPolicy(t testing.TB, js string) *Policy {
	t.Helper()
	p, err := ParsePolicy([]byte(js))
	if err != nil {
		t.Fatalf("ParsePolicy: %v", err)
	}
	return p
}

// mustLoad loads a shipped policy or fails the test.
func mustLoad(t testing.TB, name string) *Policy {
	t.Helper()
	p, err := LoadPolicy(name)
	if err != nil {
		t.Fatalf("LoadPolicy(%q): %v", name, err)
	}
	return p
}

var (
	testServer  = netip.MustParseAddrPort("203.0.113.7:443")
	testServer2 = netip.MustParseAddrPort("203.0.113.7:8443")
)

// clientN returns a distinct client address for user n.
func clientN(n int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), 40000)
}

// inspect runs a fresh flow with payload first through e.
func inspect(e *Engine, client, server netip.AddrPort, first []byte) Verdict {
	return e.Inspect(NewFlow(client, server, e.clock().Now(), first))
}

// goClientHello returns the first flight of Go's crypto/tls client for
// sni.
func goClientHello(t testing.TB, sni string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		_ = c.Handshake()
	}()
	var hdr [5]byte
	if _, err := io.ReadFull(b, hdr[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr[:], body...)
}

// capturedHello is the captured ClientHello of Debian's Chromium.
func capturedHello(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/chromium-hello.bin")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withPopcount returns n random bytes drawn from those with k set bits.
func withPopcount(r *rand.ChaCha8, n, k int) []byte {
	var pool []byte
	for c := 0; c < 256; c++ {
		if bits.OnesCount8(byte(c)) == k {
			pool = append(pool, byte(c))
		}
	}
	out := make([]byte, n)
	for i := range out {
		out[i] = pool[r.Uint64()%uint64(len(pool))]
	}
	return out
}

// suspicious returns a random 1000-byte payload no exemption covers.
func suspicious(r *rand.ChaCha8) []byte {
	for {
		b := randomBytes(r, 1000)
		if FETExemption(b) == "" {
			return b
		}
	}
}

// fetCase is a first payload and the exemption that lets it through
// ("" when none does), as a prefix of FETExemption's answer.
type fetCase struct {
	name string
	b    []byte
	want string
}

// fetCases builds payloads at and around each exemption's boundary.
func fetCases() []fetCase {
	r := seeded(1)
	nonPrintable := func(n int) []byte { // non-printable bytes with popcount 4
		var pool []byte
		for c := 0x80; c < 0x100; c++ {
			if bits.OnesCount8(byte(c)) == 4 {
				pool = append(pool, byte(c))
			}
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = pool[r.Uint64()%uint64(len(pool))]
		}
		return b
	}
	// 'U' (0x55) and '3' (0x33) have 4 set bits, like the filler.
	printable := func(n int) []byte { return bytes.Repeat([]byte("U3"), n)[:n] }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	// alternate returns n bytes, two printable then one not: 66% printable,
	// runs of 2.
	alternate := func(n int) []byte {
		b := nonPrintable(n)
		for i := range b {
			if i%3 != 2 {
				b[i] = 'U'
			}
		}
		b[0] = 0x8b // not a printable prefix
		return b
	}
	tests := []fetCase{
		{"random", suspicious(r), ""},
		{"non-printable popcount 4", nonPrintable(1000), ""},
		{"popcount 3 per byte", withPopcount(r, 1000, 3), "ex1: popcount 3.000"},
		{"popcount 5 per byte", withPopcount(r, 1000, 5), "ex1: popcount 5.000"},
		{"popcount 3.4 exactly", cat(withPopcount(r, 600, 3), withPopcount(r, 400, 4)), "ex1: popcount 3.400"},
		{"popcount 3.41", cat(withPopcount(r, 590, 3), nonPrintable(410)), ""},
		{"popcount 4.6 exactly", cat(withPopcount(r, 400, 4)[:0], nonPrintable(400), withPopcount(r, 600, 5)), "ex1: popcount 4.600"},
		{"popcount 4.59", cat(nonPrintable(410), withPopcount(r, 590, 5)), ""},
		{"printable prefix 6", cat(printable(6), nonPrintable(994)), "ex2"},
		{"printable prefix 5", cat(printable(5), nonPrintable(995)), ""},
		{"66% printable", alternate(999), "ex3"},
		{"50% printable exactly", cat(nonPrintable(1), printable(1), bytes.Repeat([]byte{0x8b, 'U'}, 499)), ""},
		{"21 contiguous printable", cat(nonPrintable(100), printable(21), nonPrintable(879)), "ex4"},
		{"20 contiguous printable", cat(nonPrintable(100), printable(20), nonPrintable(880)), ""},
		{"TLS handshake prefix", cat([]byte{0x16, 0x03, 0x01}, nonPrintable(997)), "ex5: TLS"},
		{"TLS application data prefix", cat([]byte{0x17, 0x03, 0x03}, nonPrintable(997)), "ex5: TLS"},
		{"TLS prefix version 0a", cat([]byte{0x16, 0x03, 0x0a}, nonPrintable(997)), ""},
		{"GET prefix", cat([]byte("GET "), nonPrintable(996)), "ex5: HTTP"},
		{"POST prefix", cat([]byte("POST "), nonPrintable(995)), "ex5: HTTP"},
		{"DELETE prefix", cat([]byte("DEL"), nonPrintable(997)), ""},
		{"empty", nil, "empty"},
	}
	return tests
}

func TestFETExemptions(t *testing.T) {
	for _, tt := range fetCases() {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := FETExemption(tt.b)
			if tt.want == "" && got != "" || !strings.HasPrefix(got, tt.want) {
				t.Errorf("FETExemption = %q, want prefix %q (stats %+v)", got, tt.want, MeasureFET(tt.b))
			}
		})
	}
}

// binomialOK reports whether k of n is within the 99.9% confidence
// interval of a binomial with probability p (normal approximation,
// z = 3.29).
func binomialOK(k, n int, p float64) (lo, hi float64, ok bool) {
	sd := math.Sqrt(p * (1 - p) / float64(n))
	lo, hi = p-3.29*sd, p+3.29*sd
	f := float64(k) / float64(n)
	return lo, hi, f >= lo && f <= hi
}

func TestFETBlockRate(t *testing.T) {
	e := &Engine{Policy: mustLoad(t, "fet-2021"), Rand: seeded(2), Clock: &FakeClock{}}
	payloads := seeded(3)
	const n = 10000
	blocked, exempt := 0, 0
	for i := range n {
		b := randomBytes(payloads, 1000)
		if FETExemption(b) != "" {
			exempt++
		}
		v := inspect(e, clientN(i), testServer, b)
		switch v.Action {
		case Drop:
			blocked++
			if v.Rule != "fet" {
				t.Fatalf("verdict %+v, want rule fet", v)
			}
		case Pass:
		default:
			t.Fatalf("verdict %+v, want drop or pass", v)
		}
	}
	// About 0.26% of random payloads start with 6 printable bytes.
	if lo, hi, ok := binomialOK(blocked, n-exempt, FETProbability); !ok {
		t.Errorf("blocked %d of %d suspicious payloads (%.4f), want within [%.4f, %.4f]", blocked, n-exempt, float64(blocked)/float64(n-exempt), lo, hi)
	}
	if lo, hi, ok := binomialOK(blocked, n, FETProbability); !ok {
		t.Errorf("blocked %d of %d random payloads (%.4f), want within [%.4f, %.4f]", blocked, n, float64(blocked)/n, lo, hi)
	}
	if got := e.blocked(); got != blocked {
		t.Errorf("%d residual blocks, want one per blocked client (%d)", got, blocked)
	}
}

func TestFETExemptPayloadsPass(t *testing.T) {
	// With p = 1 every suspicious payload is blocked: exempt ones must
	// not be.
	e := &Engine{Policy: mustPolicy(t, `{"name":"p1","rules":[{"fet":{"probability":1}}]}`), Rand: seeded(4), Clock: &FakeClock{}}
	r := seeded(5)
	exempt := map[string][]byte{
		"printable prefix": append([]byte("HELLO!"), randomBytes(r, 994)...),
		"low popcount":     withPopcount(r, 1000, 2),
		"high popcount":    withPopcount(r, 1000, 6),
		"tls":              append([]byte{0x16, 0x03, 0x01}, randomBytes(r, 997)...),
		"http":             append([]byte("GET /"), randomBytes(r, 995)...),
		"mostly printable": bytes.Repeat([]byte{0x81, 'a', 'b'}, 300),
		"run of 21":        append(append(withPopcount(r, 10, 4), bytes.Repeat([]byte{'U'}, 21)...), suspicious(r)...),
	}
	for name, b := range exempt {
		if FETExemption(b) == "" {
			t.Fatalf("%s: test payload is not exempt: %+v", name, MeasureFET(b))
		}
		if v := inspect(e, clientN(1), testServer, b); v.Action != Pass {
			t.Errorf("%s: verdict %+v, want pass", name, v)
		}
	}
	if v := inspect(e, clientN(1), testServer, suspicious(r)); v.Action != Drop {
		t.Errorf("suspicious payload: verdict %+v, want drop", v)
	}
}

func TestFETResidualBlock(t *testing.T) {
	clock := &FakeClock{}
	e := &Engine{Policy: mustPolicy(t, `{"name":"p1","rules":[{"fet":{"probability":1}}]}`), Rand: seeded(6), Clock: clock}
	r := seeded(7)
	a, b := clientN(1), clientN(2)
	if v := inspect(e, a, testServer, suspicious(r)); v.Action != Drop {
		t.Fatalf("first flow: %+v, want drop", v)
	}
	clock.Advance(179 * time.Second)
	if v := e.Admit(a.Addr(), testServer); v.Action != Drop || v.Rule != "fet" {
		t.Errorf("same 3-tuple after 179 s: %+v, want drop by fet", v)
	}
	if v := e.Admit(a.Addr(), testServer2); v.Action != Pass {
		t.Errorf("other port: %+v, want pass", v)
	}
	if v := e.Admit(b.Addr(), testServer); v.Action != Pass {
		t.Errorf("other client: %+v, want pass", v)
	}
	clock.Advance(time.Second)
	if v := e.Admit(a.Addr(), testServer); v.Action != Pass {
		t.Errorf("same 3-tuple after 180 s: %+v, want pass", v)
	}
	if got := e.blocked(); got != 0 {
		t.Errorf("%d blocks left after expiry, want 0", got)
	}
}

// whatsappOpening is the start of a 2017 WhatsApp connection: "WA",
// version, then a 3-byte length-prefixed Noise XX frame.
func whatsappOpening(r io.Reader, version ...byte) []byte {
	b := append([]byte{'W', 'A'}, version...)
	b = append(b, 0, 0, 34)
	return append(b, randomBytes(r, 34)...)
}

func TestSignatureAndThrottle(t *testing.T) {
	e := &Engine{Policy: mustLoad(t, "whatsapp-2017-09"), Rand: seeded(8), Clock: &FakeClock{}}
	r := seeded(9)
	tests := []struct {
		name       string
		first      []byte
		wantAction Action
		wantRule   string
	}{
		{"native signature", whatsappOpening(r, 0x04, 0x01), Drop, "whatsapp-signature"},
		{"older signature", whatsappOpening(r, 0x01, 0x05), Drop, "whatsapp-signature"},
		{"not a signature", whatsappOpening(r, 0x00, 0x01), Throttle, "throttle-unknown"},
		{"random", randomBytes(r, 600), Throttle, "throttle-unknown"},
		{"tls", goClientHello(t, "example.com"), Pass, ""},
		{"http", []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), Pass, ""},
	}
	for i, tt := range tests {
		v := inspect(e, clientN(i), testServer, tt.first)
		if v.Action != tt.wantAction || v.Rule != tt.wantRule {
			t.Errorf("%s: verdict %+v, want %s by %q", tt.name, v, tt.wantAction, tt.wantRule)
		}
		if tt.wantAction == Throttle && (v.RateBPS != 140000 || len(v.outages) != 1) {
			t.Errorf("%s: throttle %v bit/s with %d outage rules, want 140000 with 1", tt.name, v.RateBPS, len(v.outages))
		}
	}
}

func TestHostRulePenalty(t *testing.T) {
	clock := &FakeClock{}
	e := &Engine{Policy: mustLoad(t, "whatsapp-2017-07"), Rand: seeded(10), Clock: clock}
	a, b := clientN(1), clientN(2)
	for _, tt := range []struct {
		name  string
		first []byte
		want  Action
	}{
		{"sni exact", goClientHello(t, "whatsapp.net"), Reset},
		{"sni suffix", goClientHello(t, "mmg.cdn.whatsapp.net"), Reset},
		{"sni other", goClientHello(t, "notwhatsapp.net"), Pass},
		{"http host", []byte("GET /x HTTP/1.1\r\nHost: Media.Example:443\r\n\r\n"), Reset},
		{"http other host", []byte("GET /x HTTP/1.1\r\nHost: example.org\r\n\r\n"), Pass},
	} {
		// A fresh client each time: no penalty from the case before.
		v := inspect(e, clientN(100+len(tt.name)), testServer, tt.first)
		if v.Action != tt.want {
			t.Errorf("%s: verdict %+v, want %s", tt.name, v, tt.want)
		}
	}

	if v := inspect(e, a, testServer, goClientHello(t, "media.example")); v.Action != Reset || v.Rule != "sni-media" {
		t.Fatalf("blocked SNI: %+v, want reset by sni-media", v)
	}
	const n = 2000
	failed := 0
	for range n {
		if e.Admit(a.Addr(), testServer).Action == Reset {
			failed++
		}
		if v := e.Admit(b.Addr(), testServer); v.Action != Pass {
			t.Fatalf("other client during penalty: %+v, want pass", v)
		}
		if v := e.Admit(a.Addr(), testServer2); v.Action != Pass {
			t.Fatalf("other port during penalty: %+v, want pass", v)
		}
	}
	// The fraction is drawn in [0.5, 0.75]; allow the binomial noise.
	if f := float64(failed) / n; f < 0.5-0.04 || f > 0.75+0.04 {
		t.Errorf("%d of %d connections failed during the penalty (%.3f), want 50-75%%", failed, n, f)
	}
	clock.Advance(90 * time.Second)
	for range 100 {
		if v := e.Admit(a.Addr(), testServer); v.Action != Pass {
			t.Fatalf("after the 90 s penalty: %+v, want pass", v)
		}
	}
}

func TestTLSGate(t *testing.T) {
	e := &Engine{Policy: mustLoad(t, "tls-gate"), Rand: seeded(11), Clock: &FakeClock{}}
	tests := []struct {
		name  string
		first []byte
		want  Action
	}{
		{"chromium", capturedHello(t), Pass},
		{"go crypto/tls", goClientHello(t, "example.com"), Reset},
		{"http", []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), Reset},
		{"random", randomBytes(seeded(12), 300), Reset},
		{"truncated chromium", capturedHello(t)[:100], Reset},
	}
	for i, tt := range tests {
		if v := inspect(e, clientN(i), testServer, tt.first); v.Action != tt.want {
			t.Errorf("%s: verdict %+v, want %s", tt.name, v, tt.want)
		}
	}
}

// TestTLSGateAllowsCapturedChromium keeps the tls-gate allow-list in step
// with the captured Chromium, full and resumed ClientHellos (see
// docs/censor.md for the refresh command).
func TestTLSGateAllowsCapturedChromium(t *testing.T) {
	list := mustLoad(t, "tls-gate").Rules[0].TLSGate.JA4
	e := &Engine{Policy: mustLoad(t, "tls-gate"), Rand: seeded(19), Clock: &FakeClock{}}
	for _, c := range []struct{ hello, ja4 string }{
		{"testdata/chromium-hello.bin", "testdata/chromium-ja4.txt"},
		{"testdata/chromium-hello-resumed.bin", "testdata/chromium-ja4-resumed.txt"},
	} {
		b, err := os.ReadFile(c.ja4)
		if err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSpace(string(b))
		if !slices.Contains(list, want) {
			t.Errorf("tls-gate allow-list %v lacks the captured Chromium's JA4 %s (%s)", list, want, c.ja4)
		}
		hello, err := os.ReadFile(c.hello)
		if err != nil {
			t.Fatal(err)
		}
		h, err := ParseClientHello(hello)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.JA4(); got != want {
			t.Errorf("JA4 of %s = %s, want %s", c.hello, got, want)
		}
		if v := inspect(e, clientN(1), testServer, hello); v.Action != Pass {
			t.Errorf("%s through tls-gate: %+v, want pass", c.hello, v)
		}
	}
}

func TestWhitelist(t *testing.T) {
	e := &Engine{Policy: mustLoad(t, "whitelist"), Rand: seeded(13), Clock: &FakeClock{}}
	tests := []struct {
		name  string
		first []byte
		want  Action
	}{
		{"tls", goClientHello(t, "example.com"), Pass},
		{"http", []byte("POST /api HTTP/1.1\r\n"), Pass},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.6\r\n"), Drop},
		{"random", randomBytes(seeded(14), 500), Drop},
		{"whatsapp", whatsappOpening(seeded(15), 4, 1), Drop},
		{"nothing", nil, Pass},
	}
	for i, tt := range tests {
		if v := inspect(e, clientN(i), testServer, tt.first); v.Action != tt.want {
			t.Errorf("%s: verdict %+v, want %s", tt.name, v, tt.want)
		}
	}
}

func TestOutageSchedule(t *testing.T) {
	clock := &FakeClock{}
	e := &Engine{Policy: mustLoad(t, "intermittent"), Rand: seeded(16), Clock: clock}
	start := clock.Now()
	// A flow opened while the network is up, watched for outages.
	v := inspect(e, clientN(1), testServer, []byte("GET / HTTP/1.1\r\n\r\n"))
	if v.Action != Pass || len(v.outages) != 1 {
		t.Fatalf("first flow: %+v, want pass watched by 1 outage rule", v)
	}
	const step = time.Second
	var ups, downs []time.Duration
	down, since := false, start
	cut := false
	for clock.Now().Sub(start) < 6*time.Hour {
		clock.Advance(step)
		now := clock.Now()
		isDown := e.Admit(clientN(2).Addr(), testServer).Action == Reset
		if isDown && !cut {
			if dv, ok := e.Disrupt(v); !ok || dv.Action != Reset {
				t.Fatalf("existing flow during the first outage: %+v %v, want reset", dv, ok)
			}
			cut = true
		}
		if !isDown {
			if _, ok := e.Disrupt(v); ok {
				t.Fatalf("existing flow cut while the network is up")
			}
		}
		if isDown != down {
			if down {
				downs = append(downs, now.Sub(since))
			} else {
				ups = append(ups, now.Sub(since))
			}
			down, since = isDown, now
		}
	}
	if len(downs) < 20 {
		t.Fatalf("%d outages in 6 h, want at least 20 (mean period about 3.5 min)", len(downs))
	}
	for _, d := range downs {
		if d < 5*time.Second || d > 2*time.Minute+step {
			t.Errorf("outage of %v, want 5 s to 2 min", d)
		}
	}
	for _, d := range ups {
		if d < 30*time.Second || d > 5*time.Minute+step {
			t.Errorf("up period of %v, want 30 s to 5 min", d)
		}
	}
}

func TestThrottleRateWrap(t *testing.T) {
	clock := &FakeClock{}
	e := &Engine{Policy: mustLoad(t, "throttle"), Rand: seeded(17), Clock: clock}
	a, b := net.Pipe()
	defer b.Close()
	c := e.Wrap(a, clientN(1), testServer)
	defer c.Close()
	const total = 256 << 10
	done := make(chan int64)
	go func() {
		n, _ := io.Copy(io.Discard, b)
		done <- n
	}()
	start := clock.Now()
	payload := append([]byte("GET / HTTP/1.1\r\n\r\n"), bytes.Repeat([]byte{'x'}, total-18)...)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	elapsed := clock.Now().Sub(start)
	_ = c.Close()
	if n := <-done; n != total {
		t.Fatalf("server got %d bytes, want %d", n, total)
	}
	// The first burst passes at once; the rest at the rate.
	rate := float64(total-throttleBurst) * 8 / elapsed.Seconds()
	if math.Abs(rate-ThrottleRateBPS)/ThrottleRateBPS > 0.01 {
		t.Errorf("throttled rate %.0f bit/s over %v, want %d +- 1%%", rate, elapsed, ThrottleRateBPS)
	}
}

func TestWrapActions(t *testing.T) {
	e := &Engine{Policy: mustPolicy(t, `{"name":"x","rules":[
		{"host":{"hosts":["blocked.example"],"penalty":"1s"}},
		{"whitelist":{}}]}`), Rand: seeded(18), Clock: &FakeClock{}}
	t.Run("reset", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		c := e.Wrap(a, clientN(1), testServer)
		defer c.Close()
		_, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n"))
		if !isReset(err) {
			t.Fatalf("write: %v, want ECONNRESET", err)
		}
		if _, err := c.Read(make([]byte, 1)); !isReset(err) {
			t.Fatalf("read: %v, want ECONNRESET", err)
		}
	})
	t.Run("drop", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		c := e.Wrap(a, clientN(2), testServer)
		defer c.Close()
		if n, err := c.Write([]byte("SSH-2.0-x\r\n")); n != 11 || err != nil {
			t.Fatalf("write: %d, %v, want 11, nil", n, err)
		}
		// Nothing reached the server: its side sees no bytes.
		_ = b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, err := b.Read(make([]byte, 16)); n != 0 || err == nil {
			t.Fatalf("server read %d bytes (%v), want none", n, err)
		}
		// The server's bytes still reach the client.
		go func() { _, _ = b.Write([]byte("hello")) }()
		got := make([]byte, 5)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
			t.Fatalf("client read %q, %v, want hello", got, err)
		}
	})
	t.Run("dialer", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(c, c); c.Close() }()
			}
		}()
		d := &Dialer{Engine: e, Client: netip.MustParseAddr("10.9.9.9")}
		c, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := []byte("GET / HTTP/1.1\r\nHost: fine.example\r\n\r\n")
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo %q, %v", got, err)
		}
	})
}

func ExampleEngine() {
	p, err := LoadPolicy("fet-2021")
	if err != nil {
		panic(err)
	}
	// A deterministic censor: a fixed random source and a fake clock.
	clock := &FakeClock{}
	e := &Engine{Policy: p, Rand: seeded(1), Clock: clock}
	defer e.Close()
	server := netip.MustParseAddrPort("203.0.113.7:443")
	client := netip.MustParseAddrPort("198.51.100.1:50000")
	// A printable first packet is exempt.
	v := e.Inspect(NewFlow(client, server, clock.Now(), []byte("HELLO, world")))
	fmt.Println(v.Action)
	// Output: pass
}
