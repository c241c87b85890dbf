package fallback_test

import (
	"context"
	"fmt"
	"net"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/fallback"
	"github.com/ferry-im/ferry/transport/tcp"
)

// A client races a relay's endpoints; the one it lands on is remembered
// for the network it is on.
func ExampleDialer_Dial() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	reg, err := transport.NewRegistry(transport.Entry{Name: tcp.Name, Dialer: tcp.New(tcp.Config{})})
	if err != nil {
		fmt.Println(err)
		return
	}
	d := fallback.New(fallback.Config{Transports: reg, Prefer: []string{"https", "obfs"}})
	defer d.Close()
	eps := []link.Endpoint{
		{Transport: "quic", Addr: "relay.example:443"}, // unknown here: skipped
		tcp.Server{}.Endpoint(l.Addr().String()),
	}
	c, ep, err := d.Dial(context.Background(), eps)
	if err != nil {
		fmt.Println(err)
		return
	}
	c.Close()
	fmt.Println("connected over", ep.Transport)
	// Output: connected over tcp
}
