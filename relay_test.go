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
	"github.com/ferry-im/ferry/relay/sqlite"
)

// localRelay runs a relay.Server on a loopback listener, as ferry-relay
// does, and returns its link and a function that stops it. dbPath selects
// the durable SQLite store; "" uses the in-memory one.
func localRelay(dbPath string) (string, func(), error) {
	return localRelayWith(dbPath, nil)
}

// localRelayWith is localRelay with the store wrapped by wrap, if not nil.
func localRelayWith(dbPath string, wrap func(relay.Store) relay.Store) (string, func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	var store relay.Store = memstore.New()
	closeStore := func() error { return nil }
	fail := func(err error) (string, func(), error) {
		cancel()
		closeStore()
		return "", nil, err
	}
	if dbPath != "" {
		st, err := sqlite.Open(ctx, dbPath, nil)
		if err != nil {
			return fail(err)
		}
		store, closeStore = st, st.Close
	}
	if wrap != nil {
		store = wrap(store)
	}
	key, err := channel.GenerateKeyPair(nil)
	if err != nil {
		return fail(err)
	}
	srv, err := relay.NewServer(relay.Config{Key: key, Store: store})
	if err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv.ServeConn(ctx, nc)
			}()
		}
	}()
	l := link.Relay{Key: key.Public, Endpoints: []link.Endpoint{{Transport: "tcp", Addr: ln.Addr().String()}}}
	return l.String(), func() {
		ln.Close()
		srv.Close()
		cancel()
		wg.Wait()
		closeStore()
	}, nil
}

// relayPair starts a local relay (see localRelayWith) and two clients on it,
// alice and bob, who have exchanged an invite; alice has synced bob's
// introduction. Everything is closed when tb's test ends.
func relayPair(tb testing.TB, dbPath string, wrap func(relay.Store) relay.Store) (alice, bob *ferry.Client) {
	tb.Helper()
	ctx := context.Background()
	relayLink, stop, err := localRelayWith(dbPath, wrap)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(stop)
	dir := tb.TempDir()
	alice, err = ferry.Init(ctx, ferry.Config{Home: filepath.Join(dir, "alice")}, relayLink, "alice")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { alice.Close() })
	bob, err = ferry.Init(ctx, ferry.Config{Home: filepath.Join(dir, "bob")}, relayLink, "bob")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { bob.Close() })
	invite, err := alice.Invite(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := bob.Accept(ctx, invite); err != nil {
		tb.Fatal(err)
	}
	if err := alice.Sync(ctx, ferry.SyncOptions{}); err != nil {
		tb.Fatal(err)
	}
	return alice, bob
}
