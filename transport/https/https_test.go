package https

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"github.com/ferry-im/ferry/censor/censortest"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/transporttest"
)

// testSecret is the secret of the test relays.
var testSecret = Secret{1, 2, 3, 4, 5, 6, 7, 8}

// testRelay starts a Server on a loopback listener with a self-signed
// example.com certificate and returns its tunnel listener and a client
// target.
func testRelay(t testing.TB, cfg ServerConfig) (net.Listener, Target) {
	t.Helper()
	cert := censortest.ExampleComCert(t)
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Secret == (Secret{}) {
		cfg.Secret = testSecret
	}
	if cfg.TLS == nil && !cfg.Cleartext {
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := s.Listener(raw)
	t.Cleanup(func() { ln.Close() })
	return ln, Target{Addr: raw.Addr().String(), SNI: "www.example.com", Pin: Pin(leaf), Secret: cfg.Secret}
}

// addrDialer dials a fixed target at the address it is given.
type addrDialer struct {
	c *Client
	t Target
}

func (d addrDialer) DialContext(ctx context.Context, addr string) (net.Conn, error) {
	t := d.t
	t.Addr = addr
	return d.c.Dial(ctx, t)
}

func TestTransport(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) (transport.Dialer, net.Listener, string) {
			ln, target := testRelay(t, ServerConfig{})
			return addrDialer{NewClient(Config{}), target}, ln, target.Addr
		},
		Unreachable: func(t *testing.T) string {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close()
			return addr
		},
	})
}
