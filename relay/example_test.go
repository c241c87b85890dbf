package relay_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"sync"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/wire"
)

// A relay never owns a listener: the program accepts connections and hands
// each to ServeConn. Here a client connects over loopback TCP and pings.
func Example() {
	key, _ := channel.GenerateKeyPair(rand.Reader)
	store := memstore.New() // relay/sqlite in production
	defer store.Close()
	srv, err := relay.NewServer(relay.Config{Key: key, Store: store})
	if err != nil {
		panic(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { srv.ServeConn(context.Background(), c) })
		}
	})

	ctx := context.Background()
	device, _ := channel.GenerateKeyPair(rand.Reader)
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		panic(err)
	}
	ch, err := channel.Client(ctx, nc, device, key.Public)
	if err != nil {
		panic(err)
	}
	ping, _ := wire.NewFrame(wire.Ping{Nonce: 7})
	ch.Send(ctx, ping)
	f, _ := ch.Recv(ctx)
	m, _ := wire.Decode(f)
	fmt.Printf("%T %d\n", m, m.(wire.Pong).Nonce)
	ch.Close()

	l.Close()
	srv.Shutdown(ctx)
	wg.Wait()
	// Output: wire.Pong 7
}
