package censor

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor/censortest"
	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/wire"
)

// The outer handshakes the classifier skips: TLS 1.3 (the server's
// encrypted flight before the client's Finished) and TLS 1.2 (no
// application data before the client's).
var (
	handshake13 = []TLSRecord{
		{Up, recordHandshake, 517, 0}, {Down, recordHandshake, 122, 0}, {Down, recordChangeCipherSpec, 1, 0},
		{Down, recordApplicationData, 27, 0}, {Down, recordApplicationData, 400, 0}, {Down, recordApplicationData, 95, 0},
		{Down, recordApplicationData, 53, 0}, {Up, recordChangeCipherSpec, 1, 0}, {Up, recordApplicationData, 53, 0},
	}
	handshake12 = []TLSRecord{
		{Up, recordHandshake, 517, 0}, {Down, recordHandshake, 1400, 0}, {Up, recordHandshake, 37, 0},
		{Up, recordChangeCipherSpec, 1, 0}, {Up, recordHandshake, 40, 0}, {Down, recordHandshake, 200, 0},
		{Down, recordChangeCipherSpec, 1, 0}, {Down, recordHandshake, 40, 0},
	}
)

// flowRecords returns an outer handshake followed by the records of spec:
// "^N" a client record carrying N bytes, "vN" a server record, "+D" time
// D (a Go duration) passing before the next record; records are 1 ms
// apart otherwise. overhead is the outer cipher's bytes per record.
func flowRecords(t testing.TB, handshake []TLSRecord, overhead int, spec string) []TLSRecord {
	t.Helper()
	recs := append([]TLSRecord(nil), handshake...)
	at := time.Millisecond
	for _, tok := range strings.Fields(spec) {
		if d, ok := strings.CutPrefix(tok, "+"); ok {
			dur, err := time.ParseDuration(d)
			if err != nil {
				t.Fatal(err)
			}
			at += dur
			continue
		}
		n, err := strconv.Atoi(tok[1:])
		if err != nil || (tok[0] != '^' && tok[0] != 'v') {
			t.Fatalf("bad token %q", tok)
		}
		dir := Up
		if tok[0] == 'v' {
			dir = Down
		}
		recs = append(recs, TLSRecord{Dir: dir, Type: recordApplicationData, Len: n + overhead, At: at})
		at += time.Millisecond
	}
	return recs
}

func TestTLSInTLSClassifier(t *testing.T) {
	tests := []struct {
		name, spec string
		want       bool
	}{
		{"noise IK", "^98 v50 ^18 ^36", true},
		{"tls in tls", "^1509 v1820 ^64 ^65", true},
		{"hello at hello_min", "^32 v50 ^16", true},
		{"hello below hello_min", "^31 v50 ^16", false},
		{"hello at hello_max", "^4096 v50 ^64", true},
		{"hello above hello_max", "^4097 v50 ^64", false},
		{"server at server_min", "^98 v32 ^18", true},
		{"server below server_min", "^98 v31 ^18", false},
		{"server flight at server_max", "^98 v8000 v8384 ^18", true},
		{"server flight above server_max", "^98 v8000 v8385 ^18", false},
		{"finish at finish_min", "^98 v50 ^16", true},
		{"finish below finish_min", "^98 v50 ^15", false},
		{"finish at finish_max", "^1000 v50 ^128", true},
		{"finish above finish_max", "^1000 v50 ^129", false},
		{"finish after gap", "^98 v50 +1999ms ^18", true},
		{"finish after more than gap", "^98 v50 +2000ms +1us ^18", false},
		{"finish a repeat of the hello", "^96 v246 ^96 v246", false},
		{"finish just within a quarter of the hello", "^96 v246 ^72", false},
		{"finish just outside a quarter of the hello", "^96 v246 ^71", true},
		{"hello cut at a full record size", "^1186 ^323 v1186 v633 ^64", true},
		{"hello in records of unequal size", "^1186 ^1187 ^5 v1186 ^64", false},
		{"hello in two small records", "^70 ^451 v300 ^64", false},
		{"hello cut below the full record minimum", "^975 ^100 v300 ^64", false},
		{"tickets before the client's first", "v39 v39 ^98 v50 ^18", true},
		{"after a CONNECT", "^224 v39 ^1990 v1973 ^64 ^92", true},
		{"after a setup answer of setup_max", "^224 v512 ^1990 v1973 ^64", true},
		{"after a setup answer above setup_max", "^224 v513 ^1990 v1973 ^64", false},
		{"after a setup request in two records", "^70 ^150 v39 ^1990 v1973 ^64", false},
		{"no third flight", "^651 v262 v2", false},
		{"chromium h2", "^70 ^451 ^9 v13 v9 v62 v244 ^152 v13 v244", false},
		{"chromium h2 preconnect", "v39 ^70 v13 v9 ^9 ^393 ^39 ^37 v46 v4105", false},
		{"chromium h2 interleaved", "^70 v13 v9 ^451 ^9 v62 v244 ^152 v13 v244", false},
		{"chromium h1", "^651 v262 v2", false},
		{"go h1 keep-alive", "^96 v246 ^96 v246 ^96 v246", false},
		{"go h2", "^70 ^45 v39 v22 v58 v138 ^9 ^18 v13 v138", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, got := TLSInTLS(flowRecords(t, handshake13, 17, tc.spec))
			if got != tc.want {
				t.Errorf("TLSInTLS(%s) = %v (%s), want %v", tc.spec, got, ev, tc.want)
			}
			ev12, got12 := TLSInTLS(flowRecords(t, handshake12, 24, tc.spec))
			if got12 != tc.want {
				t.Errorf("over TLS 1.2: TLSInTLS(%s) = %v (%s), want %v", tc.spec, got12, ev12, tc.want)
			}
		})
	}
}

// TestTLSInTLSDecidesEarly: the classifier decides as soon as the records
// settle it, waits while they do not, and gives up after Records
// application-data records.
func TestTLSInTLSDecidesEarly(t *testing.T) {
	r := TLSInTLSRule{}.withDefaults()
	tests := []struct {
		name, spec       string
		decided, flagged bool
	}{
		{"handshake not over", "", false, false},
		{"hello still arriving", "^98", false, false},
		{"server flight still arriving", "^98 v50", false, false},
		{"flagged at the finish", "^98 v50 ^18", true, true},
		{"two messages first: only a setup could follow", "^70 ^451 v300", true, false},
		{"one message, big answer: no setup, no handshake", "^651 v600 ^9", true, false},
		{"one message, small answer: a setup could follow", "^60 v20 ^9", false, false},
	}
	for _, tc := range tests {
		res := r.classify(flowRecords(t, handshake13, 17, tc.spec), false)
		if res.decided != tc.decided || res.flagged != tc.flagged {
			t.Errorf("%s (%s): decided %v flagged %v, want %v %v", tc.name, tc.spec, res.decided, res.flagged, tc.decided, tc.flagged)
		}
	}
	// The end of the stream decides.
	if res := r.classify(flowRecords(t, handshake13, 17, "^98 v50"), true); !res.decided || res.flagged {
		t.Errorf("ended stream: %+v", res)
	}
	// A window of 3 records: the finish is the fourth.
	small := TLSInTLSRule{Records: 3}.withDefaults()
	if res := small.classify(flowRecords(t, handshake13, 17, "^98 v25 v25 ^18"), false); !res.decided || res.flagged {
		t.Errorf("finish past the window: %+v", res)
	}
	if res := small.classify(flowRecords(t, handshake13, 17, "^98 v50 ^18"), false); !res.flagged {
		t.Errorf("finish inside the window: %+v", res)
	}
}

func TestTLSInTLSPolicyErrors(t *testing.T) {
	for _, js := range []string{
		`{"records": 49}`,
		`{"records": -1}`,
		`{"hello_min": 100, "hello_max": 99}`,
		`{"server_min": 20000}`,
		`{"finish_min": 129}`,
		`{"finish_min": -1}`,
		`{"action": "throttle"}`,
		`{"kinds": ["quic"]}`,
	} {
		p := `{"name":"t","rules":[{"tls_in_tls":` + js + `}]}`
		if _, err := ParsePolicy([]byte(p)); err == nil {
			t.Errorf("ParsePolicy(%s) succeeded", p)
		}
	}
	if _, err := ParsePolicy([]byte(`{"name":"t","rules":[{"tls_in_tls":{"records":48,"finish_min":128,"hello_min":4096,"server_min":16384}}]}`)); err != nil {
		t.Errorf("bounds: %v", err)
	}
}

// tlsServer serves TLS for example.com names on a loopback listener and
// runs handle on every connection after its handshake.
func tlsServer(t testing.TB, nextProtos []string, handle func(net.Conn)) string {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{exampleComCert(t)}, NextProtos: nextProtos}
	return censortest.Serve(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		defer tc.Close()
		if tc.HandshakeContext(context.Background()) == nil {
			handle(tc)
		}
	})
}

// noiseOverTLS serves the relay's channel (Noise IK, the tcp transport's
// handshake) inside TLS: a naive tunnel. Every Ping is answered by a Pong.
func noiseOverTLS(t testing.TB) (addr string, relayKey [32]byte) {
	t.Helper()
	relay, err := channel.GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	addr = tlsServer(t, nil, func(c net.Conn) {
		ch, err := channel.Server(context.Background(), c, relay)
		if err != nil {
			return
		}
		defer ch.Close()
		for {
			f, err := ch.Recv(context.Background())
			if err != nil {
				return
			}
			m, err := wire.Decode(f)
			if ping, ok := m.(wire.Ping); err == nil && ok {
				pong, _ := wire.NewFrame(&wire.Pong{Nonce: ping.Nonce})
				_ = ch.Send(context.Background(), pong)
			}
		}
	})
	return addr, relay.Public
}

// setupTimeout bounds the handshakes of the tunnel tests: generous, for
// a loaded machine. The client finishes both (the censor drops its last
// message, which the client does not wait on); what a drop stops is the
// answer to the request that follows, which each test waits for briefly.
const setupTimeout = 20 * time.Second

// pingOverTLS runs a TLS handshake on conn, the channel handshake inside
// and sends a Ping; it returns the error of the first step that fails,
// waiting at most answer for the Pong.
func pingOverTLS(conn net.Conn, relayKey [32]byte, answer time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	tc := tls.Client(conn, &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true})
	defer tc.Close()
	if err := tc.HandshakeContext(ctx); err != nil {
		return err
	}
	dev, err := channel.GenerateKeyPair(nil)
	if err != nil {
		return err
	}
	ch, err := channel.Client(ctx, tc, dev, relayKey)
	if err != nil {
		return err
	}
	defer ch.Close()
	ping, _ := wire.NewFrame(&wire.Ping{Nonce: 7})
	if err := ch.Send(ctx, ping); err != nil {
		return err
	}
	actx, acancel := context.WithTimeout(ctx, answer)
	defer acancel()
	_, err = ch.Recv(actx)
	return err
}

// TestTLSInTLSWrap: in-process, a Noise handshake inside TLS is flagged
// when the client's confirmation follows the relay's answer; the client's
// bytes vanish from then on and its 3-tuple stays blocked, while another
// client's plain TLS flow to the same server passes.
func TestTLSInTLSWrap(t *testing.T) {
	addr, key := noiseOverTLS(t)
	e := &Engine{Policy: mustLoad(t, "tls-in-tls")}
	defer e.Close()
	server := netip.MustParseAddrPort(addr)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	w := e.Wrap(raw, clientN(1), server)
	if err := pingOverTLS(w, key, 500*time.Millisecond); err == nil {
		t.Fatal("the Ping was answered through the tunnel")
	}
	v := w.(interface{ Verdict() Verdict }).Verdict()
	if v.Action != Drop || v.Rule != "tls-in-tls" || !strings.Contains(v.Evidence, "client message of 98 bytes") {
		t.Errorf("verdict %+v, want a drop by tls-in-tls", v)
	}
	if v := e.Admit(clientN(1).Addr(), server); v.Action != Drop || !strings.Contains(v.Evidence, "blocked by tls-in-tls") {
		t.Errorf("next connection of the same client: %+v, want the 3-tuple blocked", v)
	}
	if v := e.Admit(clientN(2).Addr(), server); v.Action != Pass {
		t.Errorf("another client: %+v, want pass", v)
	}
	// The control: the same server under the open policy answers.
	raw2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	open := &Engine{}
	if err := pingOverTLS(open.Wrap(raw2, clientN(3), server), key, 5*time.Second); err != nil {
		t.Errorf("under the open policy: %v", err)
	}
}
