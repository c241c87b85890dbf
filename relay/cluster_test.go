package relay_test

import (
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/membus"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/relay/sqlite"
	"github.com/ferry-im/ferry/wire"
)

// newCluster starts n relays in this process sharing one store and one
// in-memory bus network, as the relays of a cluster share PostgreSQL and
// NATS.
func newCluster(t *testing.T, n int) ([]*env, *membus.Network) {
	return newClusterPolling(t, n, 20*time.Millisecond)
}

// newClusterPolling is newCluster with the store polled every poll while
// the bus is down.
func newClusterPolling(t *testing.T, n int, poll time.Duration) ([]*env, *membus.Network) {
	t.Helper()
	store := memstore.New()
	key := mustKey(t)
	net := &membus.Network{}
	var nodes []*env
	for range n {
		bus := net.Node()
		nodes = append(nodes, newEnv(t, func(c *relay.Config) {
			c.Key, c.Store, c.Bus, c.BusPoll = key, store, bus, poll
		}))
		t.Cleanup(func() { bus.Close() })
	}
	return nodes, net
}

// pushedWithin waits for a Deliver of id on c.
func pushedWithin(t *testing.T, c *client, want [16]byte, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				t.Fatal("connection ended")
			}
			if dl, isDeliver := m.(wire.Deliver); isDeliver && dl.ID == want {
				return time.Since(start)
			}
		case <-time.After(time.Until(start.Add(d))):
			t.Fatalf("envelope %x not pushed within %v", want[:3], d)
		}
	}
}

// TestClusterPush checks that a subscriber on one relay is pushed what a
// sender stores through another, at once, through the bus.
func TestClusterPush(t *testing.T) {
	t.Parallel()
	nodes, _ := newCluster(t, 3)
	bob := nodes[0].dial(mustKey(t), nil)
	bob.register(token(1))
	bob.subscribe()
	for i, n := range nodes[1:] {
		anon := n.dial(mustKey(t), nil)
		mustSendOK(t, anon.sendTo(bob.mailbox, token(1), id(i), []byte("across")))
		// The poll is 20ms away and the bus is up, so only the bus can
		// be this quick... but allow for a busy machine.
		pushedWithin(t, bob, id(i), 5*time.Second)
	}
}

// TestClusterBusDown checks that while the bus is down, subscribers are
// still pushed what other relays store, by polling the store, and that
// announcements lost around the outage are covered.
func TestClusterBusDown(t *testing.T) {
	t.Parallel()
	nodes, net := newCluster(t, 2)
	bob := nodes[0].dial(mustKey(t), nil)
	bob.register(token(1))
	bob.subscribe()
	anon := nodes[1].dial(mustKey(t), nil)
	net.SetDown(true)
	for i := range 5 {
		mustSendOK(t, anon.sendTo(bob.mailbox, token(1), id(i), []byte("polled")))
		pushedWithin(t, bob, id(i), 5*time.Second)
	}
	net.SetDown(false)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(1), id(10), []byte("announced")))
	pushedWithin(t, bob, id(10), 5*time.Second)
	// Nothing is pushed twice once the poll has caught up.
	time.Sleep(100 * time.Millisecond)
	bob.quiet()
}

// TestClusterNeedsArrivals checks that a Server refuses a Bus with a store
// that cannot serve a cluster.
func TestClusterNeedsArrivals(t *testing.T) {
	t.Parallel()
	store, err := sqlite.Open(t.Context(), t.TempDir()+"/relay.db", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var net membus.Network
	srv, err := relay.NewServer(relay.Config{Key: mustKey(t), Store: store, Bus: net.Node()})
	if err == nil {
		srv.Close()
		t.Fatal("NewServer accepted a Bus with an SQLite store")
	}
}

// TestClusterRetryRepublishes checks that in a cluster a retried Send is
// announced again: the relay that stored the first attempt may have died
// before announcing it (played here by storing it behind the relays'
// backs), and the subscriber, on another relay, must still be pushed it.
func TestClusterRetryRepublishes(t *testing.T) {
	t.Parallel()
	nodes, _ := newClusterPolling(t, 2, time.Hour) // no poll: only the bus pushes
	bob := nodes[0].dial(mustKey(t), nil)
	bob.register(token(1))
	bob.subscribe()
	// The Subscribe's read of the store goes on a moment after its OK:
	// let it end, so that only the bus can push what comes next.
	time.Sleep(100 * time.Millisecond)
	env := relay.Envelope{ID: id(1), Received: time.Now(), Data: []byte("stored, never announced")}
	if _, _, err := nodes[0].store.Put(t.Context(), bob.mailbox, env, relay.Quota{}); err != nil {
		t.Fatal(err)
	}
	anon := nodes[1].dial(mustKey(t), nil)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(1), id(1), env.Data))
	pushedWithin(t, bob, id(1), 5*time.Second)
}
