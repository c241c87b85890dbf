// Package relaytest runs a real relay in the test's process: a
// relay.Server with an in-memory store (or one the test gives) on a
// loopback TCP listener, with its link, for client tests that want the
// relay's actual behaviour rather than a fake.
//
// It is test support: production code never imports it.
package relaytest

import (
	"context"
	"crypto/rand"
	"net"
	"sync"
	"testing"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/memstore"
)

// Relay is a running test relay.
type Relay struct {
	// Link is the relay's link, for clients.
	Link link.Relay
	// Server, Store and Blobs are the relay and its stores.
	Server *relay.Server
	Store  relay.Store
	Blobs  relay.BlobStore
	// Key is the relay's static key pair.
	Key channel.KeyPair

	l    net.Listener
	wg   sync.WaitGroup
	once sync.Once
}

// Start runs a relay until the test ends (or Close). cfg may be nil; its
// Key, Store and Blobs are filled in when zero (a fresh key, memstore's), and
// its rate limits are off unless set, since every test client comes from
// 127.0.0.1.
func Start(tb testing.TB, cfg *relay.Config) *Relay {
	tb.Helper()
	var c relay.Config
	if cfg != nil {
		c = *cfg
	}
	if c.Key.Public == ([32]byte{}) {
		k, err := channel.GenerateKeyPair(rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		c.Key = k
	}
	if c.Store == nil {
		c.Store = memstore.New()
	}
	if c.Blobs == nil {
		c.Blobs = memstore.NewBlobs()
	}
	if c.Limits.AddrRate == 0 {
		c.Limits.AddrRate = -1
	}
	if c.Limits.HandshakeRate == 0 {
		c.Limits.HandshakeRate = -1
	}
	srv, err := relay.NewServer(c)
	if err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		tb.Fatal(err)
	}
	r := &Relay{
		Link:   link.Relay{Key: c.Key.Public, Endpoints: []link.Endpoint{{Transport: "tcp", Addr: l.Addr().String()}}},
		Server: srv,
		Store:  c.Store,
		Blobs:  c.Blobs,
		Key:    c.Key,
		l:      l,
	}
	r.wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			r.wg.Go(func() { srv.ServeConn(context.Background(), conn) })
		}
	})
	tb.Cleanup(r.Close)
	return r
}

// Close stops the relay: the listener, every connection and the store.
// It is idempotent.
func (r *Relay) Close() {
	r.once.Do(func() {
		r.l.Close()
		r.Server.Close()
		r.wg.Wait()
		r.Store.Close()
		r.Blobs.Close()
	})
}

// Metric returns the value of the relay's counter or gauge name, summed
// over the series that have a label with the value label (every series
// if label is empty).
func (r *Relay) Metric(name, label string) float64 {
	families, err := r.Server.Registry().Gather()
	if err != nil {
		return -1
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetValue() == label
			}
			if match {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
