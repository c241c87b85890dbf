package censor

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor/censortest"
)

func TestParseBlockAddr(t *testing.T) {
	tests := []struct {
		in, want string // want "" for an error
	}{
		{"203.0.113.7", "203.0.113.7"},
		{"203.0.113.0/24", "203.0.113.0/24"},
		{"203.0.113.7/32", "203.0.113.7"},
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"203.0.113.7:443", "203.0.113.7:443"},
		{"203.0.113.7:65535", "203.0.113.7:65535"},
		{"2001:db8::7", "2001:db8::7"},
		{"[2001:db8::7]:443", "[2001:db8::7]:443"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"::ffff:203.0.113.7", "203.0.113.7"},
		{"[::ffff:203.0.113.7]:443", "203.0.113.7:443"},
		{"::ffff:203.0.113.0/120", ""},
		{"203.0.113.7:0", ""},
		{"203.0.113.7:65536", ""},
		{"203.0.113.1/24", ""}, // bits after the prefix
		{"203.0.113.0/33", ""},
		{"fe80::1%eth0", ""},
		{"[fe80::1%eth0]:443", ""},
		{"relay.example:443", ""},
		{"", ""},
		{"203.0.113.0/24:443", ""},
	}
	for _, tc := range tests {
		b, err := parseBlockAddr(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("parseBlockAddr(%q) = %v, want an error", tc.in, b)
		case tc.want != "" && err != nil:
			t.Errorf("parseBlockAddr(%q): %v", tc.in, err)
		case tc.want != "" && b.String() != tc.want:
			t.Errorf("parseBlockAddr(%q) = %v, want %v", tc.in, b, tc.want)
		}
	}
}

// FuzzParseBlockAddr checks the round trip: what parses prints in a form
// that parses to the same entry, and printing that again is stable.
func FuzzParseBlockAddr(f *testing.F) {
	for _, s := range []string{"203.0.113.7", "203.0.113.0/24", "203.0.113.7:443", "[2001:db8::7]:443", "2001:db8::/32", "::ffff:1.2.3.4", "1.2.3.4/32", "fe80::1%eth0", "a:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := parseBlockAddr(s)
		if err != nil {
			return
		}
		b2, err := parseBlockAddr(b.String())
		if err != nil || b2 != b || b2.String() != b.String() {
			t.Fatalf("%q parsed to %v, which parses to %v, %v", s, b, b2, err)
		}
	})
}

func TestIPBlockRule(t *testing.T) {
	p := mustPolicy(t, `{"name":"t","rules":[{"name":"ipb","ip_block":{"addresses":["::ffff:203.0.113.7","198.51.100.0/24","192.0.2.9:443","2001:db8::/32"]}}]}`)
	e := &Engine{Policy: p}
	defer e.Close()
	client := netip.MustParseAddr("10.0.0.1")
	tests := []struct {
		server string
		want   Action
	}{
		{"203.0.113.7:443", NullRoute},
		{"203.0.113.7:1", NullRoute},
		{"[::ffff:203.0.113.7]:443", NullRoute}, // IPv4 in IPv6 form
		{"203.0.113.8:443", Pass},
		{"198.51.100.0:80", NullRoute},
		{"198.51.100.255:80", NullRoute},
		{"198.51.101.0:80", Pass},
		{"198.51.99.255:80", Pass},
		{"192.0.2.9:443", NullRoute},
		{"192.0.2.9:444", Pass},
		{"192.0.2.9:442", Pass},
		{"[2001:db8:ffff::1]:443", NullRoute},
		{"[2001:db9::1]:443", Pass},
	}
	for _, tc := range tests {
		server := netip.MustParseAddrPort(tc.server)
		v := e.Admit(client, server)
		if v.Action != tc.want {
			t.Errorf("Admit(%s) = %+v, want %s", tc.server, v, tc.want)
		}
		_, null := e.NullRouted(server)
		if null != (tc.want == NullRoute) {
			t.Errorf("NullRouted(%s) = %v", tc.server, null)
		}
		if tc.want == NullRoute && (v.Rule != "ipb" || !strings.Contains(v.Evidence, "SYNs dropped")) {
			t.Errorf("Admit(%s) = %+v, want rule ipb with evidence", tc.server, v)
		}
	}
}

func TestIPBlockPolicyErrors(t *testing.T) {
	for _, js := range []string{
		`{"name":"t","rules":[{"ip_block":{"addresses":[]}}]}`,
		`{"name":"t","rules":[{"ip_block":{}}]}`,
		`{"name":"t","rules":[{"ip_block":{"addresses":["relay.example"]}}]}`,
		`{"name":"t","rules":[{"ip_block":{"addresses":["1.2.3.4"],"servers":["1.2.3.0/24"]}}]}`,
	} {
		if _, err := ParsePolicy([]byte(js)); err == nil {
			t.Errorf("ParsePolicy(%s) succeeded", js)
		}
	}
}

func TestWithBlocked(t *testing.T) {
	base := mustLoad(t, "ip-block")
	p := base.WithBlocked("127.0.0.2", "127.0.0.3:443")
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := p.Rules[0].IPBlock.Addresses; strings.Join(got, " ") != "192.0.2.0/24 127.0.0.2 127.0.0.3:443" {
		t.Errorf("addresses %q", got)
	}
	if len(base.Rules[0].IPBlock.Addresses) != 1 {
		t.Errorf("WithBlocked changed the original: %q", base.Rules[0].IPBlock.Addresses)
	}
	// A policy without an ip_block rule gets one in front.
	q := mustLoad(t, "fet-2021").WithBlocked("127.0.0.2")
	if err := q.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(q.Rules) != 2 || q.Rules[0].Name != "block" || q.Rules[1].FET == nil {
		t.Errorf("rules %+v", q.Rules)
	}
	if err := base.WithBlocked("not an address").Validate(); err == nil {
		t.Error("a bad address validated")
	}
}

// TestDialerNullRoute: an in-process dial to a null-routed address sends
// nothing and fails as a timed-out connect, when the context ends or after
// SYNTimeout on the engine's clock; other addresses dial.
func TestDialerNullRoute(t *testing.T) {
	up := startUpstream(t, "", true)
	clock := &FakeClock{}
	e := &Engine{Policy: mustLoad(t, "open").WithBlocked(up.addr), Clock: clock}
	defer e.Close()
	d := &Dialer{Engine: e}

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	// A fake clock's Sleep returns at once: the dial fails at the SYN
	// timeout, 127 s later on that clock.
	start := clock.Now()
	_, err := d.DialContext(ctx, "tcp", up.addr)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("dial = %v, want a timeout", err)
	}
	if got := clock.Now().Sub(start); got != SYNTimeout {
		t.Errorf("dial took %v on the engine's clock, want %v", got, SYNTimeout)
	}
	// On the system clock it hangs until the context ends.
	e2 := &Engine{Policy: mustLoad(t, "open").WithBlocked(up.addr)}
	defer e2.Close()
	t0 := time.Now()
	_, err = (&Dialer{Engine: e2}).DialContext(ctx, "tcp", up.addr)
	if !errors.As(err, &ne) || !ne.Timeout() || time.Since(t0) < 150*time.Millisecond {
		t.Fatalf("dial = %v after %v, want a timeout when the context ends", err, time.Since(t0))
	}
	cctx, ccancel := context.WithCancel(t.Context())
	ccancel()
	if _, err := (&Dialer{Engine: e2}).DialContext(cctx, "tcp", up.addr); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled dial = %v, want context.Canceled", err)
	}
	if up.received.Load() != 0 || len(up.endings()) != 0 {
		t.Errorf("the null-routed server saw a connection")
	}
	// Another port of the same host is not blocked by an IP:port entry.
	other := startUpstream(t, "", true)
	c, err := d.DialContext(t.Context(), "tcp", other.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoes(t, c, []byte("hello"))
}

// TestWrapNullRoute: a connection that already exists to a null-routed
// server, wrapped in-process, passes nothing either way.
func TestWrapNullRoute(t *testing.T) {
	e := &Engine{Policy: mustLoad(t, "open").WithBlocked("10.9.9.9")}
	defer e.Close()
	a, b := net.Pipe()
	defer b.Close()
	go func() { _, _ = b.Write([]byte("banner")) }()
	w := e.Wrap(a, clientN(1), netip.MustParseAddrPort("10.9.9.9:443"))
	defer w.Close()
	if v := w.(interface{ Verdict() Verdict }).Verdict(); v.Action != NullRoute {
		t.Fatalf("verdict %+v, want null-route", v)
	}
	if n, err := w.Write([]byte("hello")); n != 5 || err != nil {
		t.Errorf("Write = %d, %v; want the bytes to vanish", n, err)
	}
	_ = w.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var ne net.Error
	if n, err := w.Read(make([]byte, 10)); n != 0 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("Read = %d, %v; want nothing until the deadline", n, err)
	}
}

// forwarder is a TCP reverse proxy on the loopback address ip that
// forwards every connection to target: the relay's address hidden behind
// a proxy or CDN.
func forwarder(t *testing.T, ip, target string) string {
	t.Helper()
	return censortest.ServeOn(t, ip, func(c net.Conn) {
		s, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer s.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.Copy(s, c)
			_ = s.(*net.TCPConn).CloseWrite()
		}()
		_, _ = io.Copy(c, s)
		<-done
	})
}

// TestMiddleboxIPBlock: the relay's address is null-routed, so a
// connection to it through the censor never opens (the SYNs are dropped:
// the dial times out, no RST, and the relay sees nothing), while the same
// relay behind a reverse proxy on another address is reachable through the
// same censor.
func TestMiddleboxIPBlock(t *testing.T) {
	relay := startUpstreamOn(t, "127.0.0.2", "", true)
	proxy := forwarder(t, "127.0.0.3", relay.addr)
	e := &Engine{Policy: mustLoad(t, "ip-block").WithBlocked("127.0.0.2")}
	defer e.Close()
	direct, log := startMiddlebox(t, &Middlebox{Upstream: relay.addr, Engine: e})
	viaProxy, _ := startMiddlebox(t, &Middlebox{Upstream: proxy, Engine: e})

	ents := waitLog(t, log, 1)
	if ents[0].Action != NullRoute || ents[0].Rule != "ip-block" || !strings.Contains(ents[0].Evidence, "block list (127.0.0.2)") {
		t.Errorf("log %+v, want the null route", ents[0])
	}
	for i := range 3 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+i))}, Timeout: 500 * time.Millisecond}
		start := time.Now()
		c, err := d.Dial("tcp", direct)
		var ne net.Error
		if err == nil {
			c.Close()
			t.Fatal("connected to the null-routed relay")
		}
		if !errors.As(err, &ne) || !ne.Timeout() || time.Since(start) < 400*time.Millisecond {
			t.Fatalf("dial = %v after %v, want a timeout (SYN dropped), not a refusal or reset", err, time.Since(start))
		}
	}
	c := dialFrom(t, "127.0.0.10", viaProxy)
	echoes(t, c, []byte("through the reverse proxy"))
	c.Close()
	if got := relay.received.Load(); got != int64(len("through the reverse proxy")) {
		t.Errorf("relay received %d bytes, want only the proxied ones", got)
	}
}
