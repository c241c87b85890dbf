package relay

import (
	"context"
	"fmt"
	"runtime"
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
// Subscribe is a resync from 0, and its OK is sent by the push goroutine
// during that resync's read, once every envelope pending when the
// Subscribe was handled has been sent (docs/protocol.md section 6.4), so
// a client draining its mailbox knows when the backlog is done. That point
// comes without reading to the end of the store (which a mailbox written
// faster than it is read never reaches): before the read the push
// goroutine takes the mailbox's pending count n (Store.Usage), and seqs
// follow commit order, so the envelopes pending at the Subscribe are among
// the first n the read returns; the OK goes after those (or at the end of
// the store, if sooner), and the read goes on to the end as any resync.
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

// hub maps mailboxes to their subscribed connections, and, in a cluster,
// keeps the Bus watching the mailboxes that have one here (a Watch per
// subscribed connection; the Bus counts them).
type hub struct {
	bus      Bus                          // nil: a relay alone
	busError func(what string, err error) // reports a failed Watch, Unwatch or Publish

	// mu protects subs.
	mu   sync.RWMutex
	subs map[[16]byte][]*subscriber
}

// add registers s, and has the bus (if any) announce its mailbox here
// before it returns, so that s's first read of the store misses nothing.
func (h *hub) add(s *subscriber) {
	mb := s.c.mailbox
	if h.bus != nil {
		if err := h.bus.Watch(mb); err != nil {
			h.busError("watch", err)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[mb] = append(h.subs[mb], s)
}

func (h *hub) remove(s *subscriber) {
	mb := s.c.mailbox
	h.mu.Lock()
	if list := slices.DeleteFunc(h.subs[mb], func(x *subscriber) bool { return x == s }); len(list) > 0 {
		h.subs[mb] = list
	} else {
		delete(h.subs, mb)
	}
	h.mu.Unlock()
	if h.bus != nil {
		if err := h.bus.Unwatch(mb); err != nil {
			h.busError("unwatch", err)
		}
	}
}

// publish hands an envelope this relay has committed to every subscriber
// of mb here, and announces it to the other relays of the cluster.
func (h *hub) publish(ctx context.Context, mb [16]byte, env Envelope) {
	h.deliver(mb, env)
	if h.bus != nil {
		if err := h.bus.Publish(ctx, mb, env); err != nil {
			h.busError("publish", err)
		}
	}
}

// deliver hands a committed envelope to every subscriber of mb here.
func (h *hub) deliver(mb [16]byte, env Envelope) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, s := range h.subs[mb] {
		s.publish(env)
	}
}

// wake tells the subscribers of mb here that the store holds envelopes up
// to seq, which they may not have been told of.
func (h *hub) wake(mb [16]byte, seq uint64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, s := range h.subs[mb] {
		s.wake(seq)
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
	// oks are the ReqIDs of Subscribes whose resync has not started
	// reading the store; each is answered once that read is done.
	oks     []uint32
	running bool // the push goroutine is running
	stopped bool
	// floor is a seq up to which every pending envelope has been pushed
	// since the Subscribe: a wake at or below it needs no store read.
	floor uint64
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
	if len(s.queue) >= s.c.s.limits.DeliverQueue || s.queued+len(env.Data) > deliverQueueBytes ||
		!s.c.s.queueMem.take(int64(len(env.Data))) {
		s.c.s.metrics.resyncs.Inc()
		s.markResync(env.Seq - 1)
	} else {
		s.queue = append(s.queue, env)
		s.queued += len(env.Data)
	}
	s.kick()
}

// maxPendingSubscribes bounds the Subscribes of one connection waiting for
// their OK: a client that sends more without reading the answers is
// answered at once instead (which waits until it reads).
const maxPendingSubscribes = 8

// subscribe makes the push goroutine send every pending envelope, then
// the OK answering the Subscribe with reqID. It reports false, doing
// nothing, when maxPendingSubscribes are already waiting.
func (s *subscriber) subscribe(reqID uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return true
	}
	if len(s.oks) >= maxPendingSubscribes {
		return false
	}
	s.oks = append(s.oks, reqID)
	s.markResync(0)
	s.kick()
	return true
}

// wake makes the push goroutine read the store from floor if the mailbox
// holds envelopes (up to seq) it may not have pushed: the cluster's poll
// when the Bus is down (cluster.go).
func (s *subscriber) wake(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || seq <= s.floor {
		return
	}
	s.markResync(s.floor)
	s.kick()
}

// pushed raises floor over the envelopes just pushed that continue it.
func (s *subscriber) pushed(envs []Envelope) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, env := range envs {
		if env.Seq == s.floor+1 {
			s.floor = env.Seq
		}
	}
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
	s.takeQueue()
	s.oks = nil
}

// takeQueue empties the queue, giving its bytes back to the relay-wide
// budget, and returns what it held; mu held.
func (s *subscriber) takeQueue() []Envelope {
	q := s.queue
	s.c.s.queueMem.give(int64(s.queued))
	s.queue, s.queued = nil, 0
	return q
}

// run pushes until there is nothing left to push.
func (s *subscriber) run() {
	defer s.c.deliveries.Done()
	yielded := false
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
			for _, env := range s.takeQueue() {
				if env.Seq <= from {
					before = append(before, env)
				}
			}
			// The Subscribes marked so far are answered during this
			// read: it starts after they were handled, so it sees every
			// envelope pending then.
			oks := s.oks
			s.resync, s.oks = false, nil
			s.mu.Unlock()
			if err := s.deliverAll(uncovered(before, lo, hi)); err != nil {
				s.fail(err)
				return
			}
			hi, err := s.readStore(from, oks)
			if err != nil {
				s.fail(err)
				return
			}
			s.mu.Lock()
			s.coverLo, s.coverHi = from, hi
			if from <= s.floor {
				// The read pushed every envelope pending in (from, hi].
				s.floor = max(s.floor, hi)
			}
			s.mu.Unlock()
		case len(s.queue) > 0:
			// The Sends of one group commit publish one after another as
			// their connections' goroutines wake: yield once so that they
			// join this batch (on the benchmark's load, about 12 envelopes
			// per write rather than 3).
			if !yielded && len(s.queue) < deliverChunk {
				yielded = true
				s.mu.Unlock()
				runtime.Gosched()
				continue
			}
			yielded = false
			lo, hi := s.coverLo, s.coverHi
			batch := s.takeQueue()
			s.mu.Unlock()
			batch = uncovered(batch, lo, hi)
			if err := s.deliverAll(batch); err != nil {
				s.fail(err)
				return
			}
			s.pushed(batch)
		default:
			s.running = false
			s.mu.Unlock()
			return
		}
	}
}

// readStore sends every pending envelope after from and returns the
// highest seq it read (from if none). If oks is not empty (a Subscribe's
// resync, from 0), it sends their OKs once the envelopes pending now have
// been sent: after as many envelopes as the mailbox holds now, or at the
// end of the store if that comes first.
func (s *subscriber) readStore(from uint64, oks []uint32) (uint64, error) {
	okAfter := -1 // envelopes to send before the OKs; -1: to the end
	if len(oks) > 0 {
		u, err := s.c.s.store.Usage(s.ctx, s.c.mailbox)
		if err != nil {
			// Read to the end instead.
			s.c.log.Debug("read mailbox usage", "err", err)
		} else {
			okAfter = u.Count
		}
	}
	after, sent := from, 0
	for {
		if len(oks) > 0 && okAfter >= 0 && sent >= okAfter {
			if err := s.answer(oks); err != nil {
				return after, err
			}
			oks = nil
		}
		envs, err := s.c.s.store.Pending(s.ctx, s.c.mailbox, after, pendingPage)
		if err != nil {
			return after, err
		}
		if err := s.deliverAll(envs); err != nil {
			return after, err
		}
		sent += len(envs)
		if len(envs) > 0 {
			after = envs[len(envs)-1].Seq
		}
		if len(envs) < pendingPage {
			return after, s.answer(oks)
		}
	}
}

// answer sends the OK of each Subscribe in reqIDs, after the Deliver
// frames of the read it waited for (SendBatch returns once they are
// written, so the OK cannot overtake them).
func (s *subscriber) answer(reqIDs []uint32) error {
	if len(reqIDs) == 0 {
		return nil
	}
	frames := make([]wire.Frame, len(reqIDs))
	for i, id := range reqIDs {
		f, err := wire.NewFrame(wire.OK{ReqID: id})
		if err != nil {
			return fmt.Errorf("marshal %v: %w", wire.TypeOK, err)
		}
		frames[i] = f
	}
	if err := s.c.ch.SendBatch(s.ctx, frames); err != nil {
		return fmt.Errorf("send %v: %w", wire.TypeOK, err)
	}
	return nil
}

// uncovered filters out, in place, the envelopes with lo < seq <= hi
// (already sent by a store read).
func uncovered(envs []Envelope, lo, hi uint64) []Envelope {
	return slices.DeleteFunc(envs, func(env Envelope) bool { return lo < env.Seq && env.Seq <= hi })
}

// deliverChunk bounds the Deliver frames (count and envelope bytes) built
// before they are handed to the channel in one SendBatch: enough to fill
// the channel's 32 KiB writes, little enough that a burst's copies stay
// small.
const (
	deliverChunk      = 64
	deliverChunkBytes = 64 << 10
)

// deliverAll pushes envs in order as Deliver frames, many per write of the
// connection (channel.Conn.SendBatch) rather than one write each.
func (s *subscriber) deliverAll(envs []Envelope) error {
	s.c.acks.delivered(envs) // before the client can have them and ack
	var frames []wire.Frame
	bytes := 0
	flush := func() error {
		if len(frames) == 0 {
			return nil
		}
		s.c.s.metrics.deliveries.Add(float64(len(frames)))
		err := s.c.ch.SendBatch(s.ctx, frames)
		clear(frames)
		frames, bytes = frames[:0], 0
		if err != nil {
			return fmt.Errorf("send %v: %w", wire.TypeDeliver, err)
		}
		return nil
	}
	for _, env := range envs {
		f, err := wire.NewFrame(wire.Deliver{Seq: env.Seq, ID: env.ID, Received: env.Received.UnixMilli(), Envelope: env.Data})
		if err != nil {
			return fmt.Errorf("marshal %v: %w", wire.TypeDeliver, err)
		}
		if frames == nil {
			frames = make([]wire.Frame, 0, min(len(envs), deliverChunk))
		}
		frames = append(frames, f)
		bytes += len(f.Payload)
		if len(frames) == deliverChunk || bytes >= deliverChunkBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// fail ends pushing after an error and closes the connection: the client
// reconnects and subscribes again, so nothing is lost.
func (s *subscriber) fail(err error) {
	s.mu.Lock()
	s.stopped, s.running, s.oks = true, false, nil
	s.takeQueue()
	s.mu.Unlock()
	if s.ctx.Err() == nil {
		s.c.log.Debug("push failed; closing connection", "err", err)
	}
	s.c.ch.Close()
}
