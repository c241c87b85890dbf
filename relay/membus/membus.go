// Package membus is an in-memory relay.Bus: a Network of relays in one
// process, for tests of clusters (several relay.Servers sharing a store)
// and the reference relay/bustest is written against. A test can take the
// network down (SetDown) to play a broker outage.
//
// It is not a message broker: nothing leaves the process.
package membus

import (
	"context"
	"slices"
	"sync"

	"github.com/ferry-im/ferry/relay"
)

var _ relay.Bus = (*Bus)(nil)

// queueLen bounds the announcements waiting for one relay's Listen; past
// it they are dropped and the relay is told the bus went down and up
// again, as a slow consumer of a real broker would be.
const queueLen = 4096

// Network links the Buses it makes. Its zero value is a network that is up.
type Network struct {
	// mu protects down and nodes.
	mu    sync.Mutex
	down  bool
	nodes []*Bus
}

// Node returns a new relay's Bus on n.
func (n *Network) Node() *Bus {
	b := &Bus{net: n, watched: map[[16]byte]int{}, events: make(chan event, queueLen), states: make(chan bool, 16)}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nodes = append(n.nodes, b)
	return b
}

// SetDown takes the network down (announcements are lost and every Listen
// is told so) or brings it back up.
func (n *Network) SetDown(down bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down == down {
		return
	}
	n.down = down
	for _, b := range n.nodes {
		b.state(!down)
	}
}

// Bus is one relay's side of a Network.
type Bus struct {
	net    *Network
	events chan event
	states chan bool

	// mu protects watched and closed.
	mu      sync.Mutex
	watched map[[16]byte]int // Watches minus Unwatches
	closed  bool
	done    chan struct{} // closed by Close; made by Listen or Close
}

type event struct {
	mb  [16]byte
	env relay.Envelope
}

func (b *Bus) closedCh() chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done == nil {
		b.done = make(chan struct{})
	}
	return b.done
}

// state queues a state change for Listen, dropping it if Listen is far
// behind (the latest state is what matters).
func (b *Bus) state(up bool) {
	select {
	case b.states <- up:
	default:
	}
}

// Publish implements relay.Bus.
func (b *Bus) Publish(ctx context.Context, mb [16]byte, env relay.Envelope) error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return relay.ErrClosed
	}
	env.Data = slices.Clone(env.Data)
	n := b.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down {
		return nil // lost, as a broker that is down loses it
	}
	for _, o := range n.nodes {
		if o != b && o.isWatching(mb) {
			o.enqueue(event{mb, env})
		}
	}
	return nil
}

func (b *Bus) isWatching(mb [16]byte) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.watched[mb] > 0 && !b.closed
}

func (b *Bus) enqueue(e event) {
	select {
	case b.events <- e:
	default:
		b.state(false) // a slow consumer: this one is lost
		b.state(true)
	}
}

// Watch implements relay.Bus.
func (b *Bus) Watch(mb [16]byte) error { return b.setWatch(mb, true) }

// Unwatch implements relay.Bus.
func (b *Bus) Unwatch(mb [16]byte) error { return b.setWatch(mb, false) }

func (b *Bus) setWatch(mb [16]byte, on bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return relay.ErrClosed
	}
	if on {
		b.watched[mb]++
	} else if b.watched[mb]--; b.watched[mb] <= 0 {
		delete(b.watched, mb)
	}
	return nil
}

// Listen implements relay.Bus.
func (b *Bus) Listen(ctx context.Context, deliver func(mb [16]byte, env relay.Envelope), state func(up bool)) error {
	done := b.closedCh()
	b.net.mu.Lock()
	up := !b.net.down
	b.net.mu.Unlock()
	state(up)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			return relay.ErrClosed
		case up := <-b.states:
			state(up)
		case e := <-b.events:
			deliver(e.mb, e.env)
		}
	}
}

// Close implements relay.Bus.
func (b *Bus) Close() error {
	done := b.closedCh()
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		close(done)
	}
	return nil
}
