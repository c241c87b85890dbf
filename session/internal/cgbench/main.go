// Command cgbench is a workload for valgrind's callgrind tool: it sets up a
// session pair and has one party send n messages to the other, so that the
// instructions spent in each Encrypt (a 1:1 send) and each Decrypt (a 1:1
// receive) can be counted with --toggle-collect. docs/benchmarks.md gives
// the commands.
//
// It is not a benchmark of wall time, and it is not part of the library.
package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"log"
	"os"

	"github.com/ferry-im/ferry/session"
)

func main() {
	n := flag.Int("n", 1000, "messages to send")
	size := flag.Int("size", 100, "plaintext bytes per message")
	pingpong := flag.Bool("pingpong", false, "alternate directions, so every message takes a DH ratchet step")
	flag.Parse()
	log.SetFlags(0)

	alice, bob, err := pair()
	if err != nil {
		log.Fatal(err)
	}
	pt := make([]byte, *size)
	from, to := alice, bob
	for i := range *n {
		m, err := from.Encrypt(pt, nil)
		if err != nil {
			log.Fatalf("message %d: %v", i, err)
		}
		if _, err := to.Decrypt(m, nil); err != nil {
			log.Fatalf("message %d: %v", i, err)
		}
		if *pingpong {
			from, to = to, from
		}
	}
	fmt.Fprintf(os.Stderr, "cgbench: %d messages of %d bytes (pingpong %v)\n", *n, *size, *pingpong)
}

// pair sets up alice and bob past the initial message and one reply, so
// that the measured messages are ordinary ratchet messages.
func pair() (alice, bob *session.Session, err error) {
	a, err := session.NewIdentity(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	b, err := session.NewIdentity(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	ps, err := session.GeneratePrekeys(rand.Reader, b, 1)
	if err != nil {
		return nil, nil, err
	}
	alice, err = session.Initiate(rand.Reader, a, ps.Bundle(b.Public(), true))
	if err != nil {
		return nil, nil, err
	}
	m, err := alice.Encrypt([]byte("hello"), nil)
	if err != nil {
		return nil, nil, err
	}
	bob, _, _, err = session.Respond(rand.Reader, b, ps, m, nil)
	if err != nil {
		return nil, nil, err
	}
	r, err := bob.Encrypt([]byte("reply"), nil)
	if err != nil {
		return nil, nil, err
	}
	if _, err := alice.Decrypt(r, nil); err != nil {
		return nil, nil, err
	}
	return alice, bob, nil
}
