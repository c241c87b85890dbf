package censor_test

import (
	"fmt"
	"log"
	"net/netip"

	"github.com/ferry-im/ferry/censor"
)

// A transport checks the shape of its first records: here a Noise
// handshake in a plain TLS tunnel, as RecordScanner would report it from
// both directions of the connection.
func ExampleTLSInTLS() {
	var up, down censor.RecordScanner
	var recs []censor.TLSRecord
	record := func(s *censor.RecordScanner, dir censor.Direction, typ byte, n int) {
		b := append([]byte{typ, 3, 3, byte(n >> 8), byte(n)}, make([]byte, n)...)
		recs, _ = s.Scan(recs, b, dir, 0)
	}
	record(&up, censor.Up, 22, 517)     // ClientHello
	record(&down, censor.Down, 22, 122) // ServerHello
	for _, n := range []int{27, 400, 95, 53} {
		record(&down, censor.Down, 23, n) // the server's encrypted flight
	}
	record(&up, censor.Up, 23, 53)     // the client's Finished
	record(&up, censor.Up, 23, 115)    // Noise message 1, 98 bytes
	record(&down, censor.Down, 23, 67) // Noise message 2, 50 bytes
	record(&up, censor.Up, 23, 35)     // the confirmation, 18 bytes
	evidence, tunnel := censor.TLSInTLS(recs)
	fmt.Println(tunnel)
	fmt.Println(evidence)
	// Output:
	// true
	// inner handshake at the start of the tunnel: client message of 98 bytes (records 115), server flight of 50 bytes (records 67), then a 18-byte client record 0s later
}

// The relay's address is null-routed; its reverse proxy's is not.
func ExamplePolicy_WithBlocked() {
	p, err := censor.LoadPolicy("ip-block")
	if err != nil {
		log.Fatal(err)
	}
	e := &censor.Engine{Policy: p.WithBlocked("127.0.0.2")}
	defer e.Close()
	for _, server := range []string{"127.0.0.2:443", "127.0.0.3:443"} {
		v, null := e.NullRouted(netip.MustParseAddrPort(server))
		fmt.Println(server, null, v.Action)
	}
	// Output:
	// 127.0.0.2:443 true null-route
	// 127.0.0.3:443 false
}
