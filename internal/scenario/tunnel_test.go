package scenario

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor/censortest"
)

// tunnelAddrs are the ends of a naive TLS tunnel around the tcp
// transport: a plain listener on the client's side that wraps every
// connection in TLS to the censor's listener, and a TLS terminator in
// front of the relay's tcp listener. It is what a Ferry user might build
// with stunnel, and what the tls-in-tls rule exists to catch.
type tunnelAddrs struct{ wrapper, censor, terminator string }

// startTLSTunnel runs both ends of the tunnel until the test ends.
func startTLSTunnel(t *testing.T, a *tunnelAddrs, relay string) {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{censortest.ExampleComCert(t)}}
	censortest.ServeAt(t, a.terminator, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		if tc.Handshake() != nil {
			return
		}
		s, err := net.Dial("tcp", relay)
		if err != nil {
			return
		}
		pipe(tc, s)
	})
	censortest.ServeAt(t, a.wrapper, func(c net.Conn) {
		d := &tls.Dialer{Config: &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true}}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := d.DialContext(ctx, "tcp", a.censor)
		if err != nil {
			return
		}
		pipe(c, s)
	})
}

// pipe copies between a and b until either side ends, then closes both.
func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		a.Close()
		b.Close()
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}
