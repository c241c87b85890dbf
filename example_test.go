package ferry_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/ferry-im/ferry"
)

// Two people become contacts with one invite and exchange a message
// through a relay.
func Example() {
	ctx := context.Background()
	relayLink, stop, err := localRelay("")
	if err != nil {
		log.Fatal(err)
	}
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
	name, err := bob.Accept(ctx, invite)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("bob added", name)

	// alice learns of bob the next time she connects.
	err = alice.Sync(ctx, ferry.SyncOptions{OnContact: func(n string) { fmt.Println("alice added", n) }})
	if err != nil {
		log.Fatal(err)
	}

	// Send returns once the relay has the message durably.
	if _, err := bob.Send(ctx, "alice", "hello, alice"); err != nil {
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
		fmt.Printf("%s: %s\n", m.Contact, m.Text)
	}
	// Output:
	// bob added alice
	// alice added bob
	// bob: hello, alice
}
