package censor_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/ferry-im/ferry/censor"
)

// A server that closes after reading 50 bytes gives itself away: it waits
// on shorter probes, closes cleanly on exactly 50 bytes, and with unread
// bytes left the kernel resets the connection.
func ExampleProber() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.ReadFull(c, make([]byte, 50))
			})
		}
	})

	p := &censor.Prober{
		Rand:        rand.NewChaCha8([32]byte{}),
		ReadTimeout: 300 * time.Millisecond,
		Soon:        time.Millisecond,
		Later:       -1, // no second round of replays
		Concurrency: 32,
	}
	first := make([]byte, 100) // a client's first packet: the replays' material
	rep, err := p.Probe(context.Background(), ln.Addr().String(), first)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range rep.Reactions {
		switch r.Probe {
		case "replay", "random-49", "random-50", "random-221":
			fmt.Println(r.Probe, r.Close)
		}
	}
	// Output:
	// replay RST
	// random-49 open
	// random-50 FIN
	// random-221 RST
}

func ExampleDiffer() {
	web := &censor.Report{Addr: "203.0.113.1:443", Reactions: []censor.Reaction{
		{Probe: "random-50", Sent: 50, Received: 7, Close: censor.CloseFIN, After: 2 * time.Millisecond},
		{Probe: "random-221", Sent: 221, Received: 7, Close: censor.CloseFIN, After: 3 * time.Millisecond},
	}}
	proxy := &censor.Report{Addr: "203.0.113.2:443", Reactions: []censor.Reaction{
		{Probe: "random-50", Sent: 50, Close: censor.CloseOpen, After: 10 * time.Second},
		{Probe: "random-221", Sent: 221, Close: censor.CloseRST, After: time.Millisecond},
	}}
	for _, d := range censor.Differ(proxy, web) {
		fmt.Println(d)
	}
	// Output:
	// random-50: ended open vs FIN
	// random-221: ended RST vs FIN
}
