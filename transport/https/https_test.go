package https

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"github.com/ferry-im/ferry/censor/censortest"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/transporttest"
)

// testSecret is the secret of the test relays.
var testSecret = Secret{1, 2, 3, 4, 5, 6, 7, 8}

// testServer returns a Server with a self-signed example.com certificate,
// pinned in its endpoints, unless cfg says otherwise.
func testServer(t testing.TB, cfg ServerConfig) (*Server, tls.Certificate) {
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
	if cfg.SNI == "" {
		cfg.SNI = "www.example.com"
	}
	if cfg.Pin == nil {
		cfg.Pin = Pin(leaf)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, cert
}

// testRelay starts a test server on a loopback listener and returns its
// tunnel listener and endpoint.
func testRelay(t testing.TB, cfg ServerConfig) (net.Listener, link.Endpoint) {
	t.Helper()
	s, _ := testServer(t, cfg)
	return transporttest.Serve(t, s)
}

func TestTransport(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) (transport.Dialer, net.Listener, link.Endpoint) {
			ln, target := testRelay(t, ServerConfig{})
			return New(Config{}), ln, target
		},
		Unreachable: func(t *testing.T) link.Endpoint {
			_, ep := testRelay(t, ServerConfig{})
			return transporttest.Unreachable(t, ep)
		},
	})
}

func TestServer(t *testing.T) {
	transporttest.RunServer(t, transporttest.ServerHarness{
		Name: Name,
		New: func(t *testing.T) (transport.Server, transport.Dialer) {
			s, _ := testServer(t, ServerConfig{})
			return s, New(Config{})
		},
	})
}

// closeAccepted closes every tunnel ln accepts, until ln is closed.
func closeAccepted(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}
