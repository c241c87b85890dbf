package clienttest

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/relay/relaytest"
	"github.com/ferry-im/ferry/transport/transporttest"
)

// RelayConfig configures StartRelay. The zero value works.
type RelayConfig struct {
	// Addr is the address on the harness's network. If empty, a fresh one.
	Addr string
	// Key is the relay's key. If zero, a fresh one.
	Key channel.KeyPair
	// Store is the relay's store, closed with the relay. If nil, a memstore.
	Store relay.Store
	// Limits are the relay's limits (relaytest turns rate limits off).
	Limits relay.Limits
	// Blobs is the relay's blob store, closed with the relay. If nil, a
	// memstore.
	Blobs relay.BlobStore
}

// Relay is a relay.Server (started by relaytest) serving the harness's
// network at Addr, with its store behind Faults.
type Relay struct {
	*relaytest.Relay
	// Link is the relay's link on the harness's network ("tcp" endpoint).
	Link link.Relay
	// Addr is the relay's address on the network.
	Addr string
	// Faults wraps the relay's store: set its knobs to make the relay
	// busy, slow or forgetful, and read what each connection did.
	Faults *Faults

	h       *Harness
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex // mu protects ln, conns and nextID
	ln      *transporttest.Listener
	conns   map[net.Conn]bool
	nextID  int
	stopped bool
}

// StartRelay starts a relay listening on the harness's network. It stops
// when the test ends.
func (h *Harness) StartRelay(cfg RelayConfig) *Relay {
	h.tb.Helper()
	if cfg.Addr == "" {
		cfg.Addr = h.nextAddr()
	}
	if cfg.Store == nil {
		cfg.Store = memstore.New()
	}
	faults := &Faults{Store: cfg.Store}
	rt := relaytest.Start(h.tb, &relay.Config{Key: cfg.Key, Store: faults, Limits: cfg.Limits, Blobs: cfg.Blobs})
	r := &Relay{
		Relay: rt, Addr: cfg.Addr, Faults: faults, h: h, conns: make(map[net.Conn]bool),
		Link: link.Relay{Key: rt.Key.Public, Endpoints: []link.Endpoint{{Transport: "tcp", Addr: cfg.Addr}}},
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.Up()
	// Registered after relaytest's own cleanup, so it runs first: the
	// connections end before the server closes.
	h.tb.Cleanup(r.stop)
	return r
}

// Up starts listening (again) at Addr.
func (r *Relay) Up() {
	r.h.tb.Helper()
	ln, err := r.h.Net.Listen(r.Addr)
	if err != nil {
		r.h.tb.Fatalf("relay up: %v", err)
	}
	r.mu.Lock()
	r.ln = ln
	r.mu.Unlock()
	r.wg.Go(func() { r.accept(ln) })
}

// Down stops listening and cuts every connection, as a crashed or
// unplugged relay would; its store keeps everything. Dials fail with
// "connection refused" until Up.
func (r *Relay) Down() {
	r.mu.Lock()
	ln, conns := r.ln, r.conns
	r.ln, r.conns = nil, make(map[net.Conn]bool)
	r.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for c := range conns {
		c.Close()
	}
}

// Restart is Down then Up.
func (r *Relay) Restart() {
	r.Down()
	r.Up()
}

func (r *Relay) stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.Down()
	r.cancel()
	r.wg.Wait()
}

func (r *Relay) accept(ln *transporttest.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.ln != ln || r.stopped {
			r.mu.Unlock()
			c.Close()
			continue
		}
		r.conns[c] = true
		r.nextID++
		ctx := context.WithValue(r.ctx, connKey{}, r.nextID)
		r.mu.Unlock()
		r.wg.Go(func() {
			r.Server.ServeConn(ctx, c)
			r.mu.Lock()
			delete(r.conns, c)
			r.mu.Unlock()
		})
	}
}

// Pending returns the envelopes waiting in mailbox mb.
func (r *Relay) Pending(mb [16]byte) []relay.Envelope {
	r.h.tb.Helper()
	envs, err := r.Faults.Store.Pending(context.Background(), mb, 0, 1<<20)
	if err != nil {
		r.h.tb.Fatal(err)
	}
	return envs
}

// PendingSoon returns how many envelopes wait in mb once the acks a client
// sent have been handled, waiting up to 5 s for the count to reach 0:
// acks are not answered, so a Sync may return before the relay read them.
func (r *Relay) PendingSoon(mbs ...[16]byte) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := 0
		for _, mb := range mbs {
			n += len(r.Pending(mb))
		}
		if n == 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Take removes and returns the envelopes waiting in mb.
func (r *Relay) Take(mb [16]byte) []relay.Envelope {
	r.h.tb.Helper()
	envs := r.Pending(mb)
	seqs := make([]uint64, len(envs))
	for i, e := range envs {
		seqs[i] = e.Seq
	}
	if _, err := r.Faults.Store.Ack(context.Background(), mb, seqs); err != nil {
		r.h.tb.Fatal(err)
	}
	return envs
}

// Put stores env in mb directly (no client involved); an id the store has
// seen before is ignored, as Store.Put says.
func (r *Relay) Put(mb [16]byte, env relay.Envelope) {
	r.h.tb.Helper()
	if env.Received.IsZero() {
		env.Received = time.Now()
	}
	if _, _, err := r.Faults.Store.Put(context.Background(), mb, env, relay.Quota{}); err != nil {
		r.h.tb.Fatal(err)
	}
}
