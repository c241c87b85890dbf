// Package transporttest is the conformance suite for transport.Dialer and
// transport.Server implementations, and an in-memory network (Network) that
// is both a fake transport for other packages' tests and the suite's own
// reference run.
//
// A transport's test calls Run with a Harness that makes a dialer and a
// listener for the server side; the suite checks the contract written on
// transport.Dialer: echo, close and EOF semantics, deadlines, and context
// handling. A transport with a relay half also calls RunServer, which checks
// the contract written on transport.Server over real loopback TCP. It is
// test support: production code never imports it.
package transporttest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
)

// Harness describes the transport under test.
type Harness struct {
	// New returns a dialer, a listener that accepts the server side of the
	// dialer's conns, and the endpoint to dial. The harness closes the
	// listener through t.Cleanup. For a transport with a relay half, Serve
	// makes the listener and the endpoint.
	New func(t *testing.T) (d transport.Dialer, l net.Listener, ep link.Endpoint)
	// Unreachable returns an endpoint of this transport where nobody
	// listens; dialing it must fail.
	Unreachable func(t *testing.T) link.Endpoint
}

// Serve wraps a fresh loopback TCP listener with srv and returns the
// wrapped listener and the endpoint that reaches it. The listener is closed
// through t.Cleanup.
func Serve(t testing.TB, srv transport.Server) (net.Listener, link.Endpoint) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := srv.Listener(raw)
	t.Cleanup(func() { l.Close() })
	return l, srv.Endpoint(raw.Addr().String())
}

// Unreachable returns an endpoint of ep's transport and parameters at a
// loopback port that was just free.
func Unreachable(t testing.TB, ep link.Endpoint) link.Endpoint {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep.Addr = l.Addr().String()
	l.Close()
	return ep
}

// Run runs the conformance suite as parallel subtests of t.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Echo", testEcho},
		{"PeerCloseEOF", testPeerCloseEOF},
		{"CloseUnblocksRead", testCloseUnblocksRead},
		{"WriteAfterClose", testWriteAfterClose},
		{"ReadDeadline", testReadDeadline},
		{"WriteDeadline", testWriteDeadline},
		{"CanceledContext", testCanceledContext},
		{"ContextEndsAfterDial", testContextAfterDial},
		{"Unreachable", testUnreachable},
		{"ConcurrentDials", testConcurrentDials},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, h)
		})
	}
}

// dial returns a connected client conn and the server's side of it.
func dial(t *testing.T, h Harness) (client, server net.Conn) {
	t.Helper()
	d, l, ep := h.New(t)
	accepted := make(chan net.Conn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			acceptErr <- err
			return
		}
		accepted <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, ep)
	if err != nil {
		t.Fatalf("DialContext(%s): %v", ep, err)
	}
	if c == nil {
		t.Fatal("DialContext returned a nil conn and no error")
	}
	select {
	case s := <-accepted:
		t.Cleanup(func() { c.Close(); s.Close() })
		return c, s
	case err := <-acceptErr:
		t.Fatalf("Accept: %v", err)
	case <-ctx.Done():
		t.Fatal("Accept: timed out")
	}
	return nil, nil
}

func testEcho(t *testing.T, h Harness) {
	c, s := dial(t, h)
	go io.Copy(s, s)
	want := make([]byte, 256<<10)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go c.Write(want)
	got := make([]byte, len(want))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("echoed bytes differ from those written")
	}
}

func testPeerCloseEOF(t *testing.T, h Harness) {
	c, s := dial(t, h)
	go func() {
		s.Write([]byte("last words"))
		s.Close()
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read until peer close: got error %v, want clean EOF", err)
	}
	if string(got) != "last words" {
		t.Fatalf("read %q, want %q", got, "last words")
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read after EOF: got %d, %v; want 0, io.EOF", n, err)
	}
}

func testCloseUnblocksRead(t *testing.T, h Harness) {
	c, _ := dial(t, h)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Read after local Close: got nil error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
}

func testWriteAfterClose(t *testing.T, h Harness) {
	c, _ := dial(t, h)
	c.Close()
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("Write after Close: got nil error")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}

func testReadDeadline(t *testing.T, h Harness) {
	c, s := dial(t, h)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	start := time.Now()
	_, err := c.Read(make([]byte, 1))
	if !isTimeout(err) {
		t.Fatalf("Read past deadline: got %v, want a timeout wrapping os.ErrDeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Read past deadline took %v", d)
	}
	// The conn stays usable once the deadline is moved.
	c.SetReadDeadline(time.Time{})
	go s.Write([]byte("y"))
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'y' {
		t.Fatalf("Read after clearing deadline: got %q, %v", b, err)
	}
}

func testWriteDeadline(t *testing.T, h Harness) {
	c, _ := dial(t, h) // the server never reads, so writes fill the buffers
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	chunk := make([]byte, 64<<10)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.Write(chunk); err != nil {
			if !isTimeout(err) {
				t.Fatalf("Write past deadline: got %v, want a timeout", err)
			}
			return
		}
	}
	t.Fatal("writes to a peer that does not read never hit the deadline")
}

func testCanceledContext(t *testing.T, h Harness) {
	d, _, ep := h.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := d.DialContext(ctx, ep)
	if err == nil {
		c.Close()
		t.Fatal("DialContext with a canceled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("DialContext with a canceled context: got %v, want an error wrapping context.Canceled", err)
	}
}

func testContextAfterDial(t *testing.T, h Harness) {
	d, l, ep := h.New(t)
	go func() {
		s, err := l.Accept()
		if err == nil {
			io.Copy(s, s)
			s.Close()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := d.DialContext(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cancel()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("z")); err != nil {
		t.Fatalf("Write after the dial context ended: %v", err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("Read after the dial context ended: %v", err)
	}
}

func testUnreachable(t *testing.T, h Harness) {
	if h.Unreachable == nil {
		t.Skip("harness has no unreachable address")
	}
	d, _, _ := h.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, h.Unreachable(t))
	if err == nil {
		c.Close()
		t.Fatal("dial to an address where nobody listens succeeded")
	}
	if c != nil {
		t.Fatal("DialContext returned both a conn and an error")
	}
}

func testConcurrentDials(t *testing.T, h Harness) {
	d, l, ep := h.New(t)
	const n = 8
	var wg sync.WaitGroup
	go func() {
		for {
			s, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(s, s); s.Close() }()
		}
	}()
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := d.DialContext(ctx, ep)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			msg := []byte{byte(i), 1, 2, 3}
			if _, err := c.Write(msg); err != nil {
				errs <- err
				return
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
				errs <- errors.New("echo mismatch on a concurrent conn")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
