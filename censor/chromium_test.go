package censor

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor/censortest"
)

// The Chromium ClientHello in testdata, and its JA4, come from Debian's
// Chromium. When Chromium is upgraded and its fingerprint changes,
// TestChromiumHello fails; refresh them with
//
//	go test ./censor -run 'TestChromiumHello$' -chromium-update
//
// (the flag name is the test's own, so that it never collides with the
// package's other golden-file flags).
var chromiumUpdate = flag.Bool("chromium-update", false, "capture a live Chromium ClientHello into testdata/chromium-hello.bin and chromium-ja4.txt")

const (
	chromiumHelloFile = "testdata/chromium-hello.bin"
	chromiumJA4File   = "testdata/chromium-ja4.txt"
	// The resumed hello: a session resumption adds pre_shared_key.
	chromiumResumedHelloFile = "testdata/chromium-hello-resumed.bin"
	chromiumResumedJA4File   = "testdata/chromium-ja4-resumed.txt"
	// chromiumMarker is in the page the tests make Chromium fetch.
	chromiumMarker = "ferry-censor-chromium-marker"
)

// chromiumWantJA4 is the JA4 in testdata/chromium-ja4.txt.
func chromiumWantJA4(t *testing.T) string {
	t.Helper()
	return readJA4File(t, chromiumJA4File)
}

// readJA4File reads a JA4 kept in testdata.
func readJA4File(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("%v (capture it: go test ./censor -run 'TestChromiumHello$' -chromium-update)", err)
	}
	return strings.TrimSpace(string(b))
}

// helloRecorder keeps the ClientHellos that arrive on its listener's
// connections, as the raw bytes of the records that carried them.
type helloRecorder struct {
	net.Listener
	mu     sync.Mutex // mu protects hellos
	hellos [][]byte
}

func (l *helloRecorder) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &teeConn{Conn: c, rec: l}, nil
}

func (l *helloRecorder) recorded() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.hellos)
}

// teeConn records the client's bytes until they make a ClientHello.
type teeConn struct {
	net.Conn
	rec  *helloRecorder
	buf  []byte
	done bool
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.done && n > 0 {
		c.buf = append(c.buf, p[:n]...)
		h, perr := ParseClientHello(c.buf)
		switch {
		case perr == nil:
			c.done = true
			c.rec.mu.Lock()
			c.rec.hellos = append(c.rec.hellos, c.buf[:h.Len])
			c.rec.mu.Unlock()
		case !IsShortHello(perr):
			c.done = true
		}
	}
	return n, err
}

// pageServer describes the HTTPS server the Chromium tests fetch from.
type pageServer struct {
	// otherHosts is the number of images on other example.com names on
	// the page, each fetched over a connection of its own with a freshly
	// shuffled, full ClientHello.
	otherHosts int
	// sameHost is the number of images on the page's own host. The server
	// then speaks HTTP/1.1 and closes every connection after one
	// response, so Chromium fetches each image over a new connection
	// that resumes the first one's TLS session (a ClientHello with a
	// pre_shared_key extension).
	sameHost int
}

// start serves a page containing chromiumMarker on 127.0.0.1 and records
// the ClientHellos that arrive.
func (ps pageServer) start(t *testing.T) (addr string, rec *helloRecorder) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec = &helloRecorder{Listener: ln}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><title>ferry</title><p id=m>%s</p>\n", chromiumMarker)
		for i := range ps.otherHosts {
			fmt.Fprintf(w, "<img src=\"https://img%d.example.com:%s/pixel.gif\">\n", i, port)
		}
		for i := range ps.sameHost {
			fmt.Fprintf(w, "<img src=\"/pixel.gif?%d\">\n", i)
		}
	})
	mux.HandleFunc("/pixel.gif", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/gif")
		w.Write([]byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"))
	})
	srv := &http.Server{
		Handler:   mux,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{censortest.ExampleComCert(t)}},
		ErrorLog:  discardLog(),
	}
	if ps.sameHost > 0 {
		srv.TLSConfig.NextProtos = []string{"http/1.1"}
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){} // no HTTP/2
		srv.SetKeepAlivesEnabled(false)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeTLS(rec, "", "")
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String(), rec
}

// The Chromium helpers of censortest, under the names this package's
// tests use.
func chromiumPath(t *testing.T) string            { return censortest.ChromiumPath(t) }
func exampleComCert(t testing.TB) tls.Certificate { return censortest.ExampleComCert(t) }
func runChromium(ctx context.Context, t *testing.T, chromium, url string, flags ...string) (string, error) {
	return censortest.RunChromium(ctx, t, chromium, url, flags...)
}

// extPreSharedKey is the pre_shared_key extension (RFC 8446 4.2.11) a
// client adds when it resumes a session.
const extPreSharedKey = 0x0029

// TestChromiumHello captures live Chromium ClientHellos and checks that
// their JA4 is the one in testdata (refreshed by -chromium-update) and
// stays the same although Chromium shuffles its extensions on every
// connection. A hello that resumes a session carries pre_shared_key as
// well, so it has a JA4 of its own, also kept in testdata; it differs from
// the full hello's by exactly that extension.
func TestChromiumHello(t *testing.T) {
	chromium := censortest.ChromiumPath(t)
	addr, rec := pageServer{otherHosts: 3, sameHost: 3}.start(t)
	_, port, _ := net.SplitHostPort(addr)
	dom, err := censortest.RunChromium(t.Context(), t, chromium, "https://www.example.com:"+port+"/")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dom, chromiumMarker) {
		t.Fatalf("chromium's DOM lacks the marker:\n%s", dom)
	}
	type kind struct {
		name        string
		ja4s        []string
		orders      []string
		main        []byte // a hello for www.example.com, kept in testdata
		hello       *ClientHello
		helloFile   string
		ja4File     string
		minCaptures int
	}
	full := &kind{name: "full", helloFile: chromiumHelloFile, ja4File: chromiumJA4File, minCaptures: 4}
	resumed := &kind{name: "resumed", helloFile: chromiumResumedHelloFile, ja4File: chromiumResumedJA4File, minCaptures: 1}
	for _, b := range rec.recorded() {
		h, err := ParseClientHello(b)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(h.SNI, ".example.com") {
			t.Errorf("SNI = %q, want a name under example.com", h.SNI)
		}
		k := full
		if slices.Contains(h.Extensions, extPreSharedKey) {
			k = resumed
		}
		if h.SNI == "www.example.com" {
			k.main, k.hello = b, h
		}
		k.ja4s = append(k.ja4s, h.JA4())
		k.orders = append(k.orders, h.JA4RO())
	}
	for _, k := range []*kind{full, resumed} {
		if len(k.ja4s) < k.minCaptures || k.main == nil {
			t.Fatalf("captured %d %s ClientHellos (one for www.example.com: %v), want at least %d", len(k.ja4s), k.name, k.main != nil, k.minCaptures)
		}
		if len(slices.Compact(slices.Clone(k.ja4s))) != 1 {
			t.Errorf("%s hellos: JA4 differs between connections of one Chromium: %q", k.name, k.ja4s)
		}
		distinct := len(slices.Compact(slices.Sorted(slices.Values(k.orders))))
		t.Logf("%s: %s hellos: JA4 %s over %d connections with %d extension orders", censortest.ChromiumVersion(chromium), k.name, k.ja4s[0], len(k.ja4s), distinct)
		if *chromiumUpdate {
			if err := os.WriteFile(k.helloFile, k.main, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(k.ja4File, []byte(k.ja4s[0]+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s and %s", k.helloFile, k.ja4File)
		}
		if want := readJA4File(t, k.ja4File); k.ja4s[0] != want {
			t.Errorf("live Chromium's %s hello has JA4 %s, testdata has %s: Chromium changed its ClientHello; refresh with go test ./censor -run 'TestChromiumHello$' -chromium-update, and update the tls-gate allow-list", k.name, k.ja4s[0], want)
		}
	}
	if distinct := len(slices.Compact(slices.Sorted(slices.Values(full.orders)))); distinct < 2 {
		t.Errorf("all %d full hellos have the same extension order; Chromium shuffles them, so JA4's sorting was not exercised", len(full.orders))
	}
	if got, want := withoutGREASE(resumed.hello.Extensions), append(withoutGREASE(full.hello.Extensions), extPreSharedKey); !sameSet(got, want) {
		t.Errorf("resumed hello's extensions %04x, want the full hello's plus pre_shared_key: %04x", got, want)
	}
}

func sameSet(a, b []uint16) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// TestChromiumHelloTestdata checks the captured hellos in testdata without
// a browser: they parse, have the properties of a current Chromium hello,
// and give the JA4s in testdata.
func TestChromiumHelloTestdata(t *testing.T) {
	for _, c := range []struct{ helloFile, ja4File string }{
		{chromiumHelloFile, chromiumJA4File},
		{chromiumResumedHelloFile, chromiumResumedJA4File},
	} {
		t.Run(c.helloFile, func(t *testing.T) {
			b, err := os.ReadFile(c.helloFile)
			if err != nil {
				t.Fatal(err)
			}
			h, err := ParseClientHello(b)
			if err != nil {
				t.Fatal(err)
			}
			if h.Len != len(b) {
				t.Errorf("hello took %d of the %d bytes", h.Len, len(b))
			}
			if got, want := h.JA4(), readJA4File(t, c.ja4File); got != want {
				t.Errorf("JA4 = %s, want %s", got, want)
			}
			if !strings.HasPrefix(h.JA4(), "t13d") {
				t.Errorf("JA4 %s is not TLS 1.3 with SNI", h.JA4())
			}
			if !slices.Equal(h.ALPN, []string{"h2", "http/1.1"}) {
				t.Errorf("ALPN = %q, want h2, http/1.1", h.ALPN)
			}
			if !isGREASE(h.CipherSuites[0]) {
				t.Errorf("first cipher suite %#04x is not GREASE", h.CipherSuites[0])
			}
			if h.SNI != "www.example.com" {
				t.Errorf("SNI = %q, want www.example.com", h.SNI)
			}
			resumed := c.helloFile == chromiumResumedHelloFile
			if got := slices.Contains(h.Extensions, extPreSharedKey); got != resumed {
				t.Errorf("pre_shared_key present: %v, want %v", got, resumed)
			}
		})
	}
}

// flowLog collects the flows a middlebox reports.
type flowLog struct {
	mu    sync.Mutex // mu protects flows
	flows []flowVerdict
	added chan struct{}
}

type flowVerdict struct {
	ja4, host string
	v         Verdict
	tls       []TLSRecord
}

func newFlowLog() *flowLog { return &flowLog{added: make(chan struct{}, 1)} }

func (l *flowLog) onFlow(f *Flow, v Verdict) {
	l.mu.Lock()
	l.flows = append(l.flows, flowVerdict{ja4: f.JA4(), host: f.Host, v: v, tls: f.TLS})
	l.mu.Unlock()
	select {
	case l.added <- struct{}{}:
	default:
	}
}

// wait returns the flows once there are at least n, or fails the test
// after 5 s.
func (l *flowLog) wait(t *testing.T, n int) []flowVerdict {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		l.mu.Lock()
		flows := slices.Clone(l.flows)
		l.mu.Unlock()
		if len(flows) >= n {
			return flows
		}
		select {
		case <-l.added:
		case <-deadline:
			t.Fatalf("middlebox reported %d flows, want %d", len(flows), n)
		}
	}
}

// startChromiumMiddlebox runs a middlebox with the named policy in front of
// upstream and returns its address.
func startChromiumMiddlebox(t *testing.T, policy, upstream string, log *flowLog) string {
	t.Helper()
	p, err := LoadPolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	return startPolicyMiddlebox(t, p, upstream, log)
}

// startPolicyMiddlebox runs a middlebox with policy p in front of
// upstream and returns its address.
func startPolicyMiddlebox(t *testing.T, p *Policy, upstream string, log *flowLog) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &Middlebox{Upstream: upstream, Policy: p, OnFlow: log.onFlow}
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Serve(t.Context(), ln)
	}()
	t.Cleanup(func() {
		m.Close()
		<-done
	})
	return ln.Addr().String()
}

// policyJA4s is the tls_gate allow-list of a policy.
func policyJA4s(t *testing.T, name string) []string {
	t.Helper()
	p, err := LoadPolicy(name)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range p.Rules {
		if r.TLSGate != nil {
			out = append(out, r.TLSGate.JA4...)
		}
	}
	return out
}

// TestChromiumThroughMiddlebox: a real browser gets a page through the
// middlebox under the tls-gate and whitelist policies, while a Go
// crypto/tls client is reset by tls-gate; and the JA4 the middlebox
// computes for the live Chromium is the one in testdata and in the
// tls-gate allow-list (when Chromium is upgraded, this fails and tells how
// to refresh them), for full and for resumed connections.
func TestChromiumThroughMiddlebox(t *testing.T) {
	chromium := censortest.ChromiumPath(t)
	// Images on the page's own host, each over a new connection that
	// resumes the first one's session: a real browser's full and resumed
	// hellos both go through the gate.
	upstream, rec := pageServer{sameHost: 2}.start(t)
	fullJA4, resumedJA4 := chromiumWantJA4(t), readJA4File(t, chromiumResumedJA4File)
	allow := policyJA4s(t, "tls-gate")
	for _, j := range []string{fullJA4, resumedJA4} {
		if !slices.Contains(allow, j) {
			t.Errorf("tls-gate allow-list %q lacks %s, a JA4 of testdata's Chromium", allow, j)
		}
	}
	for _, policy := range []string{"tls-gate", "whitelist"} {
		t.Run(policy+"/chromium", func(t *testing.T) {
			log := newFlowLog()
			mb := startChromiumMiddlebox(t, policy, upstream, log)
			_, port, _ := net.SplitHostPort(mb)
			before := len(rec.recorded())
			dom, err := censortest.RunChromium(t.Context(), t, chromium, "https://www.example.com:"+port+"/")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(dom, chromiumMarker) {
				t.Fatalf("chromium did not get the page through the middlebox; DOM:\n%s", dom)
			}
			// Every connection that reached the server is a flow the
			// middlebox reports once it ends.
			var full, resumed int
			for _, f := range log.wait(t, max(1, len(rec.recorded())-before)) {
				if f.v.Action != Pass {
					t.Errorf("chromium flow to %s: verdict %+v, want pass", f.host, f.v)
				}
				switch f.ja4 {
				case fullJA4:
					full++
				case resumedJA4:
					resumed++
				default:
					t.Errorf("the middlebox computes JA4 %s for live %s, testdata has %s (full) and %s (resumed): refresh with go test ./censor -run 'TestChromiumHello$' -chromium-update and update the tls-gate allow-list",
						f.ja4, censortest.ChromiumVersion(chromium), fullJA4, resumedJA4)
				}
			}
			if full == 0 || resumed == 0 {
				t.Errorf("%d full and %d resumed Chromium connections, want some of each", full, resumed)
			}
		})
	}
	t.Run("tls-gate/crypto-tls", func(t *testing.T) {
		log := newFlowLog()
		mb := startChromiumMiddlebox(t, "tls-gate", upstream, log)
		d := &tls.Dialer{Config: &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}}}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", mb)
		if err == nil {
			c.Close()
			t.Fatal("crypto/tls client completed a handshake through tls-gate")
		}
		if ctx.Err() != nil {
			t.Fatalf("handshake timed out instead of being reset: %v", err)
		}
		flows := log.wait(t, 1)
		if v := flows[0].v; v.Action != Reset || v.Rule != "tls-gate" {
			t.Errorf("crypto/tls flow: verdict %+v, want reset by tls-gate", v)
		}
		if slices.Contains(allow, flows[0].ja4) || flows[0].ja4 == "" {
			t.Errorf("crypto/tls flow has JA4 %q", flows[0].ja4)
		}
		t.Logf("crypto/tls: %v; JA4 %s; %s", err, flows[0].ja4, flows[0].v.Evidence)
	})
}
