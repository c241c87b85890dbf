// Package censortest holds helpers for tests of the censor testbed and its
// commands: loopback servers whose reactions the prober measures. It is
// imported only by tests.
package censortest

import (
	"bytes"
	mrand "math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Serve runs handle on every connection to a new loopback listener until
// the test ends, then closes the listener and every connection and waits
// for the handlers. It returns the listener's address.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	return ServeOn(t, "127.0.0.1", handle)
}

// ServeOn is Serve on a listener on the address ip (any of 127.0.0.0/8
// is loopback on Linux).
func ServeOn(t testing.TB, ip string, handle func(net.Conn)) string {
	t.Helper()
	return ServeAt(t, net.JoinHostPort(ip, "0"), handle)
}

// ServeAt is Serve on a listener on addr (host:port).
func ServeAt(t testing.TB, addr string, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // mu protects conns
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// Buffer is a bytes.Buffer safe for concurrent use: the log or output of
// a middlebox or a process, read while it is written.
type Buffer struct {
	mu sync.Mutex // mu protects b
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// ports are the ports FreeAddr handed out in this process.
var ports struct {
	mu   sync.Mutex // mu protects used
	used map[int]bool
}

// FreeAddr returns an address on ip whose port was free a moment ago, for
// a process the test starts to listen on. The port comes from below
// Linux's ephemeral range (32768-60999): a port from ":0" is an ephemeral
// one, which any outgoing connection on the machine may take before the
// process listens. Each port is handed out once per test binary.
func FreeAddr(tb testing.TB, ip string) string {
	tb.Helper()
	ports.mu.Lock()
	defer ports.mu.Unlock()
	if ports.used == nil {
		ports.used = map[int]bool{}
	}
	for range 1000 {
		p := 20000 + mrand.IntN(12000)
		if ports.used[p] {
			continue
		}
		addr := net.JoinHostPort(ip, strconv.Itoa(p))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		ports.used[p] = true
		return addr
	}
	tb.Fatal("no free port below the ephemeral range")
	return ""
}
