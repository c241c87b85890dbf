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
	reload := flag.Bool("reload", false, "unmarshal the sender's state before and marshal it after each send, as a client with a store does")
	setups := flag.Bool("pqxdh", false, "run n full session setups (Initiate, first Encrypt, Respond) instead")
	flag.Parse()
	log.SetFlags(0)

	if *setups {
		for i := range *n {
			if _, _, err := pair(false); err != nil {
				log.Fatalf("setup %d: %v", i, err)
			}
		}
		fmt.Fprintf(os.Stderr, "cgbench: %d session setups\n", *n)
		return
	}

	alice, bob, err := pair(true)
	if err != nil {
		log.Fatal(err)
	}
	pt := make([]byte, *size)
	from, to := alice, bob
	if *reload {
		// The client's store path: load the state, send, save the state.
		for i := range *n {
			st, err := alice.MarshalBinary()
			if err != nil {
				log.Fatal(err)
			}
			var s session.Session
			if err := s.UnmarshalBinary(st); err != nil {
				log.Fatal(err)
			}
			m, err := s.Encrypt(pt, nil)
			if err != nil {
				log.Fatalf("message %d: %v", i, err)
			}
			if _, err := bob.Decrypt(m, nil); err != nil {
				log.Fatalf("message %d: %v", i, err)
			}
			alice = &s
		}
		fmt.Fprintf(os.Stderr, "cgbench: %d messages of %d bytes, state reloaded for each\n", *n, *size)
		return
	}
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

// pair sets up alice and bob past the initial message and, if reply, one
// reply, so that the measured messages are ordinary ratchet messages.
func pair(reply bool) (alice, bob *session.Session, err error) {
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
	if err != nil || !reply {
		return alice, bob, err
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
