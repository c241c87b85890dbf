package tcp

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/transporttest"
)

func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) (transport.Dialer, net.Listener, link.Endpoint) {
			l, ep := transporttest.Serve(t, Server{})
			return New(Config{}), l, ep
		},
		Unreachable: func(t *testing.T) link.Endpoint {
			return transporttest.Unreachable(t, Server{}.Endpoint("127.0.0.1:1"))
		},
	})
	transporttest.RunServer(t, transporttest.ServerHarness{
		Name: Name,
		New: func(t *testing.T) (transport.Server, transport.Dialer) {
			return Server{}, New(Config{})
		},
	})
}

// countingDialer is a NetDialer that counts its dials and makes them with a
// net.Dialer, as a proxy would.
type countingDialer struct {
	n atomic.Int32
}

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func TestNetDialer(t *testing.T) {
	t.Parallel()
	l, ep := transporttest.Serve(t, Server{})
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	var nd countingDialer
	c, err := New(Config{NetDialer: &nd}).DialContext(context.Background(), ep)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := nd.n.Load(); got != 1 {
		t.Fatalf("Config.NetDialer made %d dials, want 1", got)
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		cfg            Config
		timeout, alive string
	}{
		{"zero", Config{}, "15s", "30s"},
		{"set", Config{Timeout: 3e9, KeepAlive: 4e9}, "3s", "4s"},
		{"off", Config{Timeout: -1, KeepAlive: -1}, "0s", "-1ns"},
	} {
		d := New(tc.cfg)
		if got := d.d.Timeout.String(); got != tc.timeout {
			t.Errorf("%s: timeout %s, want %s", tc.name, got, tc.timeout)
		}
		if got := d.d.KeepAlive.String(); got != tc.alive {
			t.Errorf("%s: keep-alive %s, want %s", tc.name, got, tc.alive)
		}
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	var r transport.Registry
	if err := Register(&r, Config{}); err != nil {
		t.Fatal(err)
	}
	if err := Register(&r, Config{}); err == nil {
		t.Fatal("registering tcp twice succeeded")
	}
	if _, ok := r.Lookup(Name); !ok {
		t.Fatal("tcp not found after Register")
	}
}
