package session_test

import (
	"crypto/rand"
	"fmt"
	"log"

	"github.com/ferry-im/ferry/session"
)

// Example shows a whole 1:1 exchange: Bob publishes prekeys, Alice starts a
// session from his bundle, Bob answers her initial message, and both keep
// talking. A client stores identities, prekey sets and sessions with their
// MarshalBinary methods between steps.
func Example() {
	alice, err := session.NewIdentity(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	bob, err := session.NewIdentity(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}

	// Bob generates prekeys and uploads their records; the relay serves
	// bundles assembled from them.
	prekeys, err := session.GeneratePrekeys(rand.Reader, bob, 10)
	if err != nil {
		log.Fatal(err)
	}
	raw, _ := prekeys.Bundle(bob.Public(), true).MarshalBinary()

	// Alice fetches the bundle and starts a session.
	bundle, err := session.ParseBundle(raw)
	if err != nil {
		log.Fatal(err)
	}
	toBob, err := session.Initiate(rand.Reader, alice, bundle)
	if err != nil {
		log.Fatal(err)
	}
	msg, err := toBob.Encrypt([]byte("hi Bob"), nil)
	if err != nil {
		log.Fatal(err)
	}

	// Bob answers the initial message, which consumes one-time prekeys.
	toAlice, plaintext, used, err := session.Respond(rand.Reader, bob, prekeys, msg, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("bob got %q from a session with %v, one-time prekey used: %v\n",
		plaintext, toAlice.RemoteIdentity() == alice.Public(), used.HasOneTime)

	reply, _ := toAlice.Encrypt([]byte("hi Alice"), nil)
	plaintext, err = toBob.Decrypt(reply, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("alice got %q\n", plaintext)

	// A replayed message fails and changes nothing.
	if _, err := toBob.Decrypt(reply, nil); err != nil {
		fmt.Println("replay rejected")
	}
	// Output:
	// bob got "hi Bob" from a session with true, one-time prekey used: true
	// alice got "hi Alice"
	// replay rejected
}

// ExampleSession_MarshalBinary saves a session and restores it.
func ExampleSession_MarshalBinary() {
	alice, _ := session.NewIdentity(rand.Reader)
	bob, _ := session.NewIdentity(rand.Reader)
	prekeys, _ := session.GeneratePrekeys(rand.Reader, bob, 1)
	s, err := session.Initiate(rand.Reader, alice, prekeys.Bundle(bob.Public(), false))
	if err != nil {
		log.Fatal(err)
	}
	state, _ := s.MarshalBinary() // secret: store it encrypted
	var restored session.Session
	if err := restored.UnmarshalBinary(state); err != nil {
		log.Fatal(err)
	}
	fmt.Println(restored.RemoteIdentity() == bob.Public())
	// Output: true
}
