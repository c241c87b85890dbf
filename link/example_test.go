package link_test

import (
	"fmt"

	"github.com/ferry-im/ferry/link"
)

func ExampleParseRelay() {
	r, err := link.ParseRelay("ferry://relay?v=1&k=AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA&tcp=127.0.0.1:7443")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.Endpoints[0].Transport, r.Endpoints[0].Addr)
	_, err = link.ParseRelay("ferry://relay?v=1&tcp=127.0.0.1:7443")
	fmt.Println(err)
	// Output:
	// tcp 127.0.0.1:7443
	// relay link: missing relay key
}

func ExampleInvite_String() {
	inv := link.Invite{
		Relay: link.Relay{Key: [32]byte{1}, Endpoints: []link.Endpoint{{Transport: "tcp", Addr: "relay.example.org:443"}}},
		Name:  "Ana",
	}
	if err := inv.Check(); err != nil {
		fmt.Println(err)
		return
	}
	s := inv.String()
	back, err := link.ParseInvite(s)
	fmt.Println(s)
	fmt.Println(back.Name, err)
	// Output:
	// ferry://invite?v=1&k=AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&tcp=relay.example.org:443&id=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&mb=AAAAAAAAAAAAAAAAAAAAAA&tok=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&s=AAAAAAAAAAAAAAAAAAAAAA&n=QW5h
	// Ana <nil>
}
