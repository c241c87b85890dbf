package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/ferry-im/ferry/transport/https"
)

// benchCert is a self-signed ECDSA P-256 certificate for
// www.example.com, the kind the https transport's self-signed relays
// have.
func benchCert(b *testing.B) (tls.Certificate, *x509.Certificate) {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "www.example.com"},
		DNSNames:     []string{"www.example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}

// newHTTPSServer is the relay half of the https transport with a
// self-signed, pinned certificate and the built-in website.
func newHTTPSServer(b *testing.B) *https.Server {
	cert, leaf := benchCert(b)
	var secret https.Secret
	rand.Read(secret[:])
	srv, err := https.NewServer(https.ServerConfig{
		Secret: secret,
		TLS:    &tls.Config{Certificates: []tls.Certificate{cert}},
		SNI:    "www.example.com",
		Pin:    https.Pin(leaf),
	})
	if err != nil {
		b.Fatal(err)
	}
	return srv
}

// newHTTPS sets up the https transport.
func newHTTPS(b *testing.B) setup {
	srv := newHTTPSServer(b)
	raw := loopback(b)
	l := srv.Listener(raw)
	b.Cleanup(func() { l.Close() })
	ep := srv.Endpoint(raw.Addr().String())
	d := https.New(https.Config{})
	return setup{ln: l, dial: func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, ep) }}
}

// newTLS sets up plain crypto/tls (TLS 1.3, Go's defaults), the baseline
// of what TLS costs.
func newTLS(b *testing.B) setup {
	cert, _ := benchCert(b)
	l := tls.NewListener(loopback(b), &tls.Config{Certificates: []tls.Certificate{cert}})
	addr := l.Addr().String()
	return setup{ln: handshakeListener{l}, dial: func(ctx context.Context) (net.Conn, error) {
		d := &tls.Dialer{Config: &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true}}
		return d.DialContext(ctx, "tcp", addr)
	}}
}

// handshakeListener completes the TLS handshake before Accept returns, as
// the transports' listeners do.
type handshakeListener struct{ net.Listener }

func (l handshakeListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if err := c.(*tls.Conn).Handshake(); err == nil {
			return c, nil
		}
		c.Close()
	}
}
