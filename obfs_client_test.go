package ferry_test

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ferry-im/ferry"
	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/transport/fallback/fallbacktest"
)

// TestDefaultTransportsReachObfs: a client with the default registry
// reaches a relay whose link has only an obfs endpoint.
func TestDefaultTransportsReachObfs(t *testing.T) {
	key, err := channel.GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := relay.NewServer(relay.Config{Key: key, Store: memstore.New()})
	if err != nil {
		t.Fatal(err)
	}
	osrv := fallbacktest.ObfsServer(t, 0)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := osrv.Listener(raw)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { ln.Close(); srv.Close(); cancel(); wg.Wait() }()
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { srv.ServeConn(ctx, nc) })
		}
	})
	l := link.Relay{Key: key.Public, Endpoints: []link.Endpoint{osrv.Endpoint(raw.Addr().String())}}
	c, err := ferry.Init(ctx, ferry.Config{Home: filepath.Join(t.TempDir(), "alice")}, l.String(), "alice")
	if err != nil {
		t.Fatalf("init over obfs with the default transports: %v", err)
	}
	defer c.Close()
	if _, err := c.Invite(ctx); err != nil {
		t.Fatal(err)
	}
}
