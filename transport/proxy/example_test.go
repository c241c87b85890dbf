package proxy_test

import (
	"fmt"

	"github.com/ferry-im/ferry/transport/obfs"
	"github.com/ferry-im/ferry/transport/proxy"
)

// Any transport goes through a proxy by taking it as its NetDialer.
func ExampleFromURL() {
	nd, err := proxy.FromURL("socks5://127.0.0.1:9050", nil) // Tor's SOCKS port
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = obfs.New(obfs.Config{NetDialer: nd})

	_, err = proxy.FromURL("socks4://127.0.0.1:1080", nil)
	fmt.Println(err)
	// Output: proxy URL "socks4://127.0.0.1:1080" has the unsupported scheme "socks4": write it as socks5://[user:password@]host:port or http://[user:password@]host:port
}
