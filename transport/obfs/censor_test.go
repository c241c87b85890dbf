package obfs_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/obfs"
	"github.com/ferry-im/ferry/transport/tcp"
	"github.com/ferry-im/ferry/transport/transporttest"
)

// TestThroughFETMiddlebox dials through the censor's loopback middlebox
// running the fet rule at probability 1, each connection from its own
// 127.0.1.x address: 100 obfs connections all echo, while tcp connections
// (the control) are blocked every time.
func TestThroughFETMiddlebox(t *testing.T) {
	pol, err := censor.ParsePolicy([]byte(`{"name":"fet-always","rules":[{"name":"fet","fet":{"probability":1}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		n      int
		srv    transport.Server
		dialer func(nd transport.NetDialer) transport.Dialer
		passes bool
	}{
		{"obfs", 100, newServer(t, time.Second), func(nd transport.NetDialer) transport.Dialer { return obfs.New(obfs.Config{NetDialer: nd}) }, true},
		{"tcp", 8, tcp.Server{}, func(nd transport.NetDialer) transport.Dialer { return tcp.New(tcp.Config{NetDialer: nd}) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, ep := transporttest.Serve(t, tc.srv)
			go echoAll(l)
			mln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			m := &censor.Middlebox{Upstream: ep.Addr, Policy: pol}
			go m.Serve(context.Background(), mln)
			defer m.Close()
			via := ep
			via.Addr = mln.Addr().String()
			passed := 0
			for i := range tc.n {
				nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(10+i))}}
				if echoes(tc.dialer(nd), via, tc.name == "tcp") {
					passed++
				}
			}
			if want := map[bool]int{true: tc.n, false: 0}[tc.passes]; passed != want {
				t.Fatalf("%d of %d connections got through, want %d", passed, tc.n, want)
			}
		})
	}
}

func echoAll(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() { io.Copy(c, c); c.Close() }()
	}
}

// echoes reports whether a conn dialed to ep echoes a message within
// half a second. For tcp the message is random-looking, as the channel's first
// message is.
func echoes(d transport.Dialer, ep link.Endpoint, random bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, ep)
	if err != nil {
		return false
	}
	defer c.Close()
	msg := []byte("hello relay, how are you today?")
	if random {
		msg = []byte{0x00, 0x60, 0x9c, 0xe1, 0x13, 0x8f, 0x42, 0xd7, 0x0b, 0xa5, 0x6e, 0xf1, 0x80, 0x2c, 0x97, 0x1d}
	}
	c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write(msg); err != nil {
		return false
	}
	_, err = io.ReadFull(c, make([]byte, len(msg)))
	return err == nil
}
