package censor_test

import (
	"encoding/hex"
	"fmt"

	"github.com/ferry-im/ferry/censor"
)

func ExampleParseClientHello() {
	// The first bytes of a TLS 1.2 connection to example.com.
	first, _ := hex.DecodeString("160301005e0100005a0303000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" +
		"000004c02f00350100002d00000010000e00000b6578616d706c652e636f6d0010000b000908687474702f312e31000d0006000404030804")

	// A middlebox that has only read part of the hello waits for more.
	_, err := censor.ParseClientHello(first[:40])
	fmt.Println("short:", censor.IsShortHello(err))

	h, err := censor.ParseClientHello(first)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(h.SNI, h.ALPN)
	fmt.Println(h.JA4())
	fmt.Println(h.JA4R())
	// Output:
	// short: true
	// example.com [http/1.1]
	// t12d0203h1_1584f0a67932_ef95ca21a004
	// t12d0203h1_0035,c02f_000d_0403,0804
}
