package relay

import (
	"context"
	"time"
)

// Bus carries news of stored envelopes between the relays of a cluster:
// several relay processes that share one Store (relay/postgres). A relay
// publishes every envelope it stores; the relays that serve a subscriber
// of that mailbox push it at once instead of waiting for the subscriber's
// next Subscribe. relay/natsbus is the implementation on NATS,
// relay/membus an in-memory fake, relay/bustest the conformance suite.
//
// The Store stays the only truth: a Bus may lose announcements (it says
// so through Listen's state callback), and the Server then polls the Store
// (ArrivalLister) until the Bus is back and the gap is covered. A relay
// alone needs no Bus.
//
// Contracts every implementation keeps (relay/bustest checks them):
//   - All methods are safe for concurrent use.
//   - Publish does not wait for the other relays; an announcement reaches
//     every other relay watching its mailbox at that time, unless the bus
//     reports itself down in between. A relay is never told of its own
//     announcements.
//   - Watch and Unwatch count: a mailbox is watched while it has had more
//     Watches than Unwatches (the relay watches once per subscribed
//     connection). An announcement published after Watch returns reaches
//     Listen: a relay reads the store after it has watched, so nothing
//     stored in between is missed.
//   - Announcements are handed to Listen's deliver in the order one relay
//     published them; deliver's env is the caller's to keep.
//   - After Close, Publish, Watch and Unwatch return ErrClosed and Listen
//     returns. Close is idempotent.
type Bus interface {
	// Publish announces that env (with its Seq) has been stored, durably,
	// in mailbox mb.
	Publish(ctx context.Context, mb [16]byte, env Envelope) error
	// Watch starts, and Unwatch stops, the delivery of mb's announcements
	// to Listen.
	Watch(mb [16]byte) error
	Unwatch(mb [16]byte) error
	// Listen calls deliver for every announcement of a watched mailbox,
	// and state whenever the bus goes down (false: announcements may be
	// lost from now on) or up (true: they flow again; the first call says
	// whether the bus is up at the start), until ctx ends or Close. The
	// callbacks are called from one goroutine at a time. There is at most
	// one Listen at a time.
	Listen(ctx context.Context, deliver func(mb [16]byte, env Envelope), state func(up bool)) error
	// Close releases the bus. See the contracts above.
	Close() error
}

// ArrivalLister is the Store capability a cluster needs: a store-wide read
// of where envelopes arrived recently, which the Server polls while its Bus
// is down. A Server with a Bus refuses a Store without it.
type ArrivalLister interface {
	// Arrivals returns, for each mailbox with a pending envelope received at
	// or after since, the highest seq pending there; at most limit
	// mailboxes.
	Arrivals(ctx context.Context, since time.Time, limit int) ([]Arrival, error)
}

// Arrival says that mailbox Mailbox holds pending envelopes up to Seq.
type Arrival struct {
	Mailbox [16]byte
	Seq     uint64
}
