package https

import (
	"crypto/x509"
	"net"
	"net/http"
	"testing"

	"github.com/ferry-im/ferry/censor/censortest"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/https/httpstest"
	"github.com/ferry-im/ferry/transport/transporttest"
)

// behindNginx starts a relay in cleartext mode and nginx in front of it,
// and returns the relay's tunnel listener, the endpoint through nginx, and
// the address of a second nginx in front of a stock server (the
// reference) with the same configuration.
func behindNginx(t *testing.T) (net.Listener, link.Endpoint, string) {
	t.Helper()
	cert := censortest.ExampleComCert(t)
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	s, _ := testServer(t, ServerConfig{Cleartext: true, Pin: Pin(leaf)})
	ln, backend := transporttest.Serve(t, s)
	proxy := httpstest.Nginx(t, cert, s.Path(), backend.Addr, backend.Addr)
	stock := serveStockCleartext(t)
	reference := httpstest.Nginx(t, cert, s.Path(), stock, stock)
	return ln, s.Endpoint(proxy), reference
}

// serveStockCleartext runs a stock net/http server of the built-in site
// speaking HTTP/1.1 and h2c, as a backend of nginx.
func serveStockCleartext(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := NewHTTPServer(BuiltinSite(), nil)
	hs.Protocols = new(http.Protocols)
	hs.Protocols.SetHTTP1(true)
	hs.Protocols.SetUnencryptedHTTP2(true)
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close(); <-done })
	return ln.Addr().String()
}

// TestBehindNginx runs the conformance suite through Debian's nginx as a
// TLS-terminating reverse proxy.
func TestBehindNginx(t *testing.T) {
	httpstest.NginxPath(t)
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) (transport.Dialer, net.Listener, link.Endpoint) {
			ln, ep, _ := behindNginx(t)
			return New(Config{}), ln, ep
		},
		Unreachable: func(t *testing.T) link.Endpoint {
			_, ep := testRelay(t, ServerConfig{})
			return transporttest.Unreachable(t, ep)
		},
	})
}

// TestBehindNginxProbeEqualsStock: behind nginx, the prober cannot tell
// the relay from a stock server behind the same nginx configuration, and
// pages are the same.
func TestBehindNginxProbeEqualsStock(t *testing.T) {
	ln, ep, reference := behindNginx(t)
	closeAccepted(ln)
	rec := new(firstWrite)
	c, err := New(Config{NetDialer: rec}).DialContext(t.Context(), ep)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	for _, d := range probeBoth(t, ep.Addr, reference, rec.first) {
		t.Errorf("the prober tells nginx+relay from nginx+stock: %s", d)
	}
	k := deriveKeys(testSecret)
	for _, path := range []string{"/", "/missing", k.path} {
		if got, want := fetchDump(t, ep.Addr, path), fetchDump(t, reference, path); got != want {
			t.Errorf("GET %s: nginx+relay answered\n%s\nnginx+stock\n%s", path, got, want)
		}
	}
}
