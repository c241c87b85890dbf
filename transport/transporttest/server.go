package transporttest

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/transport"
)

// ServerHarness describes the relay half of a transport under test.
type ServerHarness struct {
	// New returns a server and a dialer that reaches it, each configured
	// for one test.
	New func(t *testing.T) (transport.Server, transport.Dialer)
	// Name is the transport's name, which Endpoint must put in its
	// endpoints.
	Name string
}

// RunServer runs the conformance suite of transport.Server as parallel
// subtests of t, over loopback TCP: the endpoint names the transport and
// the address, raw conns that stall or send garbage do not keep Accept from
// returning an honest client's conn, and closing the listener unblocks
// Accept and closes the raw listener.
func RunServer(t *testing.T, h ServerHarness) {
	tests := []struct {
		name string
		fn   func(*testing.T, ServerHarness)
	}{
		{"Endpoint", testServerEndpoint},
		{"StalledConnsDoNotBlockAccept", testStalledConns},
		{"CloseUnblocksAccept", testCloseUnblocksAccept},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, h)
		})
	}
}

func testServerEndpoint(t *testing.T, h ServerHarness) {
	srv, _ := h.New(t)
	ep := srv.Endpoint("relay.example.org:443")
	if ep.Transport != h.Name || ep.Addr != "relay.example.org:443" {
		t.Fatalf("Endpoint = %s, want transport %q at relay.example.org:443", ep, h.Name)
	}
	if err := ep.Check(); err != nil {
		t.Fatalf("Endpoint cannot go in a link: %v", err)
	}
	if again := srv.Endpoint("relay.example.org:443"); !again.Equal(ep) {
		t.Fatalf("Endpoint changed between calls: %s, then %s", ep, again)
	}
}

// testStalledConns opens raw conns that send nothing, garbage, or half of
// something, then checks that an honest client still gets through.
func testStalledConns(t *testing.T, h ServerHarness) {
	srv, d := h.New(t)
	l, ep := Serve(t, srv)
	var raws []net.Conn
	defer func() {
		for _, c := range raws {
			c.Close()
		}
	}()
	for i := range 8 {
		c, err := net.Dial("tcp", ep.Addr)
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, c)
		switch i % 3 {
		case 1:
			c.Write([]byte("\x16\x03\x01\x00\xff garbage that is no handshake"))
		case 2:
			c.Write(make([]byte, 7))
		}
	}
	// Every accepted conn is told "ok": for a transport without a
	// handshake (tcp) the raw conns are accepted too, and only the honest
	// client reads the answer.
	var accepted sync.WaitGroup
	accepted.Go(func() {
		for {
			s, err := l.Accept()
			if err != nil {
				return
			}
			raws = append(raws, s)
			s.Write([]byte("ok"))
		}
	})
	defer accepted.Wait()
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, ep)
	if err != nil {
		t.Fatalf("honest dial with stalled conns open: %v", err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 2)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ok" {
		t.Fatalf("honest conn with stalled conns open: read %q, %v; want \"ok\" (did Accept return it?)", b, err)
	}
}

func testCloseUnblocksAccept(t *testing.T, h ServerHarness) {
	srv, _ := h.New(t)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := srv.Listener(raw)
	// A raw conn in the middle of its handshake when the listener closes.
	stalled, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	errc := make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				errc <- err
				return
			}
			c.Close() // tcp has no handshake: the stalled conn is accepted
		}
	}()
	time.Sleep(20 * time.Millisecond)
	closed := make(chan struct{})
	go func() { l.Close(); close(closed) }()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: got %v, want an error wrapping net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not unblock Accept")
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while a raw conn was mid-handshake")
	}
	if c, err := net.DialTimeout("tcp", raw.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the raw listener still accepts after Close")
	}
}
