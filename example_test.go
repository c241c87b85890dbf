package ferry_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"

	"github.com/ferry-im/ferry"
	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/memstore"
)

// Two people become contacts with one invite and exchange a message
// through a relay.
func Example() {
	ctx := context.Background()
	relayLink, stop := startRelay()
	defer stop()
	dir, err := os.MkdirTemp("", "ferry-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	alice, err := ferry.Init(ctx, ferry.Config{Home: filepath.Join(dir, "alice")}, relayLink, "alice")
	if err != nil {
		log.Fatal(err)
	}
	defer alice.Close()
	bob, err := ferry.Init(ctx, ferry.Config{Home: filepath.Join(dir, "bob")}, relayLink, "bob")
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Close()

	// alice invites; bob accepts and has alice as a contact at once.
	invite, err := alice.Invite(ctx)
	if err != nil {
		log.Fatal(err)
	}
	k, err := bob.Accept(ctx, invite)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("bob added", k.Name, "("+k.Status.String()+")")

	// alice learns of bob the next time she connects.
	err = alice.Sync(ctx, ferry.SyncOptions{OnContact: func(k ferry.Contact) { fmt.Println("alice added", k.Name) }})
	if err != nil {
		log.Fatal(err)
	}

	// Send returns once the relay has the message durably.
	if _, err := bob.Send(ctx, k.Conversation, "hello, alice"); err != nil {
		log.Fatal(err)
	}
	if err := alice.Sync(ctx, ferry.SyncOptions{}); err != nil {
		log.Fatal(err)
	}
	msgs, err := alice.Messages(ctx, ferry.Query{Unread: true})
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range msgs {
		if m.Kind == ferry.KindNotice {
			fmt.Println("ferry notice for alice in", m.ConversationName)
			continue
		}
		fmt.Printf("%s: %s\n", m.From, m.Text())
	}
	// Output:
	// bob added alice (pending)
	// alice added bob
	// ferry notice for alice in bob
	// bob: hello, alice
}

// startRelay runs a relay with an in-memory store on a loopback port, as
// ferry-relay would, and returns its link and a function that stops it.
func startRelay() (string, func()) {
	key, err := channel.GenerateKeyPair(nil)
	if err != nil {
		log.Fatal(err)
	}
	srv, err := relay.NewServer(relay.Config{Key: key, Store: memstore.New()})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go srv.ServeConn(context.Background(), nc)
		}
	}()
	l := link.Relay{Key: key.Public, Endpoints: []link.Endpoint{{Transport: "tcp", Addr: ln.Addr().String()}}}
	return l.String(), func() {
		ln.Close()
		<-done
		srv.Close()
	}
}
