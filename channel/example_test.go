package channel_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/wire"
)

// A client that knows the relay's key (from its link) opens a channel and
// sends a frame; the relay learns the client's device key and mailbox.
func Example() {
	relayKey, _ := channel.GenerateKeyPair(nil)
	deviceKey, _ := channel.GenerateKeyPair(nil)
	clientSide, relaySide := net.Pipe() // any net.Conn from a transport

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := channel.Server(ctx, relaySide, relayKey)
		if err != nil {
			fmt.Println("relay:", err)
			return
		}
		defer c.Close()
		f, err := c.Recv(ctx)
		if err != nil {
			fmt.Println("relay:", err)
			return
		}
		fmt.Println("relay got", f.Type, "from the owner of its mailbox:",
			channel.MailboxID(c.PeerKey()) == channel.MailboxID(deviceKey.Public))
	}()

	c, err := channel.Client(ctx, clientSide, deviceKey, relayKey.Public)
	if err != nil {
		fmt.Println("client:", err)
		return
	}
	defer c.Close()
	f, _ := wire.NewFrame(wire.Subscribe{ReqID: 1})
	if err := c.Send(ctx, f); err != nil {
		fmt.Println("client:", err)
	}
	<-done
	// Output:
	// relay got Subscribe from the owner of its mailbox: true
}
