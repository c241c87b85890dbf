package relay

import (
	"context"
	"slices"
	"sync"

	"github.com/ferry-im/ferry/wire"
)

// Push delivery.
//
// Every Send that stores a new envelope publishes it to the subscribers of
// its mailbox, after the store has committed it. Each subscriber queues it
// (bounded by Limits.DeliverQueue and deliverQueueBytes) and a push
// goroutine, started when there is something to push and gone when there
// is not, sends Deliver frames. An idle subscribed connection therefore
// costs no goroutine.
//
// When a queue is full the envelope is dropped from it and the subscriber
// is marked for a resync from just below the lowest dropped seq: the push
// goroutine then reads the store's pending envelopes after that seq, which
// include every dropped one because publishing happens after commit. A
// Subscribe is a resync from 0.
//
// Seqs are assigned in commit order, so once a read of the store has
// returned envelopes up to seq hi, any envelope with a seq in (from, hi]
// that is still queued was in that read (or acknowledged since) and is
// skipped. Before a resync reads the store, the queued envelopes with a
// seq at or below from are sent and the others dropped (the read has
// them): one sender connection publishes in seq order, so its envelopes
// reach the subscriber in the order it sent them. Publishes of different
// senders may reach a queue out of seq order (two Sends commit in one
// batch and race to publish); the push goroutine does not rely on that
// order, only on the covered range. Delivery is at least once: a client
// may see an envelope twice (after a resync, or on another connection) and
// de-duplicates by message id.

// deliverQueueBytes bounds the envelope bytes queued for one subscriber.
const deliverQueueBytes = 1 << 20

// pendingPage is how many envelopes a resync reads from the store at a time.
const pendingPage = 64

// hub maps mailboxes to their subscribed connections.
type hub struct {
	// mu protects subs.
	mu   sync.RWMutex
	subs map[[16]byte][]*subscriber
}

func (h *hub) add(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[s.c.mailbox] = append(h.subs[s.c.mailbox], s)
}

func (h *hub) remove(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	mb := s.c.mailbox
	list := slices.DeleteFunc(h.subs[mb], func(x *subscriber) bool { return x == s })
	if len(list) == 0 {
		delete(h.subs, mb)
	} else {
		h.subs[mb] = list
	}
}

// publish hands a committed envelope to every subscriber of mb.
func (h *hub) publish(mb [16]byte, env Envelope) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, s := range h.subs[mb] {
		s.publish(env)
	}
}

// subscriber is one connection's push state.
type subscriber struct {
	c   *conn
	ctx context.Context // the connection's handler context

	// mu protects the fields below.
	mu      sync.Mutex
	queue   []Envelope
	queued  int  // bytes of envelope data in queue
	resync  bool // the store must be re-read from seq > from
	from    uint64
	coverLo uint64 // queued envelopes with coverLo < seq <= coverHi
	coverHi uint64 // were already read from the store
	running bool   // the push goroutine is running
	stopped bool
}

func newSubscriber(c *conn, ctx context.Context) *subscriber {
	return &subscriber{c: c, ctx: ctx}
}

// publish queues env, or marks a resync if the queue is full.
func (s *subscriber) publish(env Envelope) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	if len(s.queue) >= s.c.s.limits.DeliverQueue || s.queued+len(env.Data) > deliverQueueBytes {
		s.c.s.metrics.resyncs.Inc()
		s.markResync(env.Seq - 1)
	} else {
		s.queue = append(s.queue, env)
		s.queued += len(env.Data)
	}
	s.kick()
}

// resyncFrom makes the push goroutine send every pending envelope with a
// seq above from.
func (s *subscriber) resyncFrom(from uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.markResync(from)
	s.kick()
}

// markResync records a resync from seq; mu held.
func (s *subscriber) markResync(from uint64) {
	if !s.resync || from < s.from {
		s.from = from
	}
	s.resync = true
}

// kick starts the push goroutine unless it runs; mu held.
func (s *subscriber) kick() {
	if s.running {
		return
	}
	s.running = true
	s.c.deliveries.Add(1)
	go s.run()
}

// stop ends pushing: nothing is queued after it returns, and the push
// goroutine exits at its next step (the caller closes the channel to
// unblock a Send in progress, and waits on conn.deliveries).
func (s *subscriber) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	s.queue = nil
}

// run pushes until there is nothing left to push.
func (s *subscriber) run() {
	defer s.c.deliveries.Done()
	for {
		s.mu.Lock()
		switch {
		case s.stopped:
			s.running = false
			s.mu.Unlock()
			return
		case s.resync:
			// Queued envelopes at or below from come before the store
			// read, so each sender's envelopes keep their order; those
			// above it are all in the read.
			from, lo, hi := s.from, s.coverLo, s.coverHi
			var before []Envelope
			for _, env := range s.queue {
				if env.Seq <= from {
					before = append(before, env)
				}
			}
			s.queue, s.queued, s.resync = nil, 0, false
			s.mu.Unlock()
			for _, env := range before {
				if lo < env.Seq && env.Seq <= hi {
					continue
				}
				if err := s.deliver(env); err != nil {
					s.fail(err)
					return
				}
			}
			hi, err := s.readStore(from)
			if err != nil {
				s.fail(err)
				return
			}
			s.mu.Lock()
			s.coverLo, s.coverHi = from, hi
			s.mu.Unlock()
		case len(s.queue) > 0:
			batch, lo, hi := s.queue, s.coverLo, s.coverHi
			s.queue, s.queued = nil, 0
			s.mu.Unlock()
			for _, env := range batch {
				if lo < env.Seq && env.Seq <= hi {
					continue
				}
				if err := s.deliver(env); err != nil {
					s.fail(err)
					return
				}
			}
		default:
			s.running = false
			s.mu.Unlock()
			return
		}
	}
}

// readStore sends every pending envelope after from and returns the
// highest seq it read (from if none).
func (s *subscriber) readStore(from uint64) (uint64, error) {
	after := from
	for {
		envs, err := s.c.s.store.Pending(s.ctx, s.c.mailbox, after, pendingPage)
		if err != nil {
			return after, err
		}
		for _, env := range envs {
			if err := s.deliver(env); err != nil {
				return after, err
			}
			after = env.Seq
		}
		if len(envs) < pendingPage {
			return after, nil
		}
	}
}

func (s *subscriber) deliver(env Envelope) error {
	s.c.s.metrics.deliveries.Inc()
	return s.c.reply(s.ctx, wire.Deliver{Seq: env.Seq, ID: env.ID, Received: env.Received.UnixMilli(), Envelope: env.Data})
}

// fail ends pushing after an error and closes the connection: the client
// reconnects and subscribes again, so nothing is lost.
func (s *subscriber) fail(err error) {
	s.mu.Lock()
	s.stopped, s.running, s.queue = true, false, nil
	s.mu.Unlock()
	if s.ctx.Err() == nil {
		s.c.log.Debug("push failed; closing connection", "err", err)
	}
	s.c.ch.Close()
}
