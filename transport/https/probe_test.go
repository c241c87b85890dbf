package https

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"math/rand/v2"
	"net"
	"net/http/httputil"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor"
	"github.com/ferry-im/ferry/transport/transporttest"
)

// firstWrite records the first bytes a dialed conn writes: a real
// client's first packet, the material of the prober's replays.
type firstWrite struct {
	mu    sync.Mutex // mu protects first
	first []byte
}

func (f *firstWrite) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &recordFirst{Conn: c, f: f}, nil
}

type recordFirst struct {
	net.Conn
	f    *firstWrite
	done bool
}

func (c *recordFirst) Write(p []byte) (int, error) {
	if !c.done {
		c.done = true
		c.f.mu.Lock()
		if c.f.first == nil {
			c.f.first = bytes.Clone(p)
		}
		c.f.mu.Unlock()
	}
	return c.Conn.Write(p)
}

// serveStock runs a stock net/http HTTPS server (NewHTTPServer, no Ferry)
// with site and cert on loopback: the reference a relay must not differ
// from.
func serveStock(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := NewHTTPServer(BuiltinSite(), &tls.Config{Certificates: []tls.Certificate{cert}})
	done := make(chan struct{})
	go func() { defer close(done); hs.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { hs.Close(); <-done })
	return ln.Addr().String()
}

// probeBoth probes target and reference with the same probes (replays of
// first, random probes) and returns the differences.
func probeBoth(t *testing.T, target, reference string, first []byte) []string {
	t.Helper()
	var reports [2]*censor.Report
	var errs [2]error
	var wg sync.WaitGroup
	for i, addr := range []string{target, reference} {
		wg.Go(func() {
			p := &censor.Prober{
				Rand:        rand.NewChaCha8([32]byte{7}),
				ReadTimeout: 3 * time.Second,
				Soon:        time.Millisecond,
				Later:       -1,
				Concurrency: 8,
			}
			reports[i], errs[i] = p.Probe(t.Context(), addr, first)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range reports[0].Reactions {
		t.Logf("%-22s sent %4d received %5d %-5s after %v", r.Probe, r.Sent, r.Received, r.Close, r.After.Round(time.Millisecond))
	}
	return censor.Differ(reports[0], reports[1])
}

// TestProbeEqualsStockServer: the GFW's active probes (replays of a real
// client's first packet, as is and with bytes changed, and random probes)
// cannot tell the relay's https listener from a stock net/http HTTPS
// server serving the same site with the same certificate.
func TestProbeEqualsStockServer(t *testing.T) {
	s, cert := testServer(t, ServerConfig{})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := s.Listener(raw)
	t.Cleanup(func() { ln.Close() })
	closeAccepted(ln)
	ep := s.Endpoint(raw.Addr().String())
	rec := new(firstWrite)
	c, err := New(Config{NetDialer: rec}).DialContext(t.Context(), ep)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := censor.ParseClientHello(rec.first); err != nil {
		t.Fatalf("the client's first packet is no ClientHello: %v", err)
	}
	for _, d := range probeBoth(t, ep.Addr, serveStock(t, cert), rec.first) {
		t.Errorf("the prober tells the relay from a stock server: %s", d)
	}
}

// TestPlainHTTPAndPagesEqualStockServer: plain HTTP on the port, and
// requests for pages over TLS, get the same bytes from the relay as from
// the stock server (but for the Date header).
func TestPlainHTTPAndPagesEqualStockServer(t *testing.T) {
	s, cert := testServer(t, ServerConfig{})
	_, ep := transporttest.Serve(t, s)
	stock := serveStock(t, cert)
	plain := func(addr string) string {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n"))
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("plain HTTP to %s: %v after %q", addr, err, b)
		}
		return string(b)
	}
	if got, want := plain(ep.Addr), plain(stock); got != want {
		t.Errorf("plain HTTP: relay answered %q, stock server %q", got, want)
	}
	k := deriveKeys(testSecret)
	for _, path := range []string{"/", "/style.css", "/missing", "/bread.html?x=1", k.path} {
		got, want := fetchDump(t, ep.Addr, path), fetchDump(t, stock, path)
		if got != want {
			t.Errorf("GET %s: relay answered\n%s\nstock server\n%s", path, got, want)
		}
	}
}

// fetchDump GETs path over HTTP/2 and dumps the response without its Date.
func fetchDump(t *testing.T, addr, path string) string {
	t.Helper()
	resp := roundTrip(t, addr, path, "")
	defer resp.Body.Close()
	resp.Header.Del("Date")
	b, err := httputil.DumpResponse(resp, true)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
