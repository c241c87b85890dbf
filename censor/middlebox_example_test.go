package censor_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"

	"github.com/ferry-im/ferry/censor"
)

// A middlebox playing the fet-2021 censor between clients on
// 127.0.0.1:8443 and a server on 127.0.0.1:443, logging one JSON line per
// flow to standard output.
func ExampleMiddlebox() {
	p, err := censor.LoadPolicy("fet-2021")
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:8443")
	if err != nil {
		log.Fatal(err)
	}
	m := &censor.Middlebox{Upstream: "127.0.0.1:443", Policy: p, Log: os.Stdout}
	defer m.Close()
	if err := m.Serve(context.Background(), ln); err != nil {
		log.Fatal(err)
	}
}

func ExamplePolicyNames() {
	for _, name := range censor.PolicyNames() {
		fmt.Println(name)
	}
	// Output:
	// esni-2020
	// fet-2021
	// intermittent
	// ip-block
	// open
	// probing
	// throttle
	// tls-gate
	// tls-in-tls
	// whatsapp-2017-07
	// whatsapp-2017-09
	// whitelist
}

// The censor in-process: a connection from net.Pipe through the
// whitelist policy. A first packet that is neither TLS nor HTTP vanishes.
func ExampleEngine_Wrap() {
	p, err := censor.LoadPolicy("whitelist")
	if err != nil {
		log.Fatal(err)
	}
	e := &censor.Engine{Policy: p, Clock: &censor.FakeClock{}}
	defer e.Close()
	client, server := net.Pipe()
	defer server.Close()
	c := e.Wrap(client,
		netip.MustParseAddrPort("10.0.0.7:50000"),
		netip.MustParseAddrPort("203.0.113.7:443"))
	defer c.Close()
	n, err := c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n")) // succeeds, but is dropped
	fmt.Println(n, err)
	v := c.(interface{ Verdict() censor.Verdict }).Verdict()
	fmt.Println(v.Rule, v.Action)
	// Output:
	// 21 <nil>
	// whitelist drop
}
