package transporttest

import (
	"fmt"
	"net"
	"sync/atomic"
	"testing"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
)

var addrs atomic.Int64

func TestMemoryConformance(t *testing.T) {
	var n Network
	Run(t, Harness{
		New: func(t *testing.T) (transport.Dialer, net.Listener, link.Endpoint) {
			addr := fmt.Sprintf("relay-%d:1", addrs.Add(1))
			l, err := n.Listen(addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			return &n, l, link.Endpoint{Transport: "mem", Addr: addr}
		},
		Unreachable: func(t *testing.T) link.Endpoint { return link.Endpoint{Transport: "mem", Addr: "nobody:1"} },
	})
}

func TestListenInUse(t *testing.T) {
	var n Network
	l, err := n.Listen("a:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Listen("a:1"); err == nil {
		t.Fatal("second Listen on the same address succeeded")
	}
	l.Close()
	l.Close()
	if _, err := n.Listen("a:1"); err != nil {
		t.Fatalf("Listen after Close: %v", err)
	}
}
