package tcp

import (
	"net"
	"testing"

	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/transporttest"
)

func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) (transport.Dialer, net.Listener, string) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			return New(Config{}), l, l.Addr().String()
		},
		Unreachable: func(t *testing.T) string {
			// A port that was just free: listen, note it, close.
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
