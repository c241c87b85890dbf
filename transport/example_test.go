package transport_test

import (
	"context"
	"fmt"
	"net"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/tcp"
)

// A client builds its registry from an explicit list and dials the first
// endpoint of a relay link.
func Example() {
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
	relay := link.Relay{Key: [32]byte{1}, Endpoints: []link.Endpoint{tcp.Server{}.Endpoint(l.Addr().String())}}
	ep := relay.Endpoints[0]
	conn, err := reg.Dial(context.Background(), ep)
	if err != nil {
		fmt.Println(err)
		return
	}
	conn.Close()
	fmt.Println("connected over", ep.Transport)
	// Output: connected over tcp
}
