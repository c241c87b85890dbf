package obfs_test

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/ferry-im/ferry/transport/obfs"
)

// A relay wraps its listener with the obfs server and puts the endpoint in
// its link; a client dials that endpoint and gets a plain net.Conn.
func Example() {
	key, err := obfs.GenerateKey(nil) // a relay keeps it in its data directory
	if err != nil {
		fmt.Println(err)
		return
	}
	srv, err := obfs.NewServer(obfs.ServerConfig{Key: key})
	if err != nil {
		fmt.Println(err)
		return
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	l := srv.Listener(raw)
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			io.Copy(c, c) // echo
			c.Close()
		}
	}()

	ep := srv.Endpoint(raw.Addr().String()) // obfs=HOST:PORT,key=...,fet=...
	c, err := obfs.New(obfs.Config{}).DialContext(context.Background(), ep)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.Write([]byte("hello"))
	buf := make([]byte, 5)
	io.ReadFull(c, buf)
	fmt.Println(ep.Transport, string(buf))
	// Output: obfs hello
}
