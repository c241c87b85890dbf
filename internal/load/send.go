package load

import (
	"context"
	"encoding/binary"
	"sync"
	"time"

	"github.com/ferry-im/ferry/wire"
)

// sendAll runs a sender for every user of this process that sends, and
// returns when they are done: every message acknowledged or refused, or
// Quiet passed without an answer, or the run ended.
func (r *runner) sendAll(sends map[int][]int) {
	perSender := 0.0
	if r.cfg.Rate > 0 {
		perSender = r.cfg.Rate / float64(r.plan.totalSenders())
	}
	mailboxes := &mailboxCache{plan: r.plan, m: map[int][16]byte{}}
	start := time.Now()
	r.recv.started(start)
	var wg sync.WaitGroup
	for i, msgs := range sends {
		u := r.users[i-r.lo]
		wg.Go(func() { u.sendLoop(msgs, start, perSender, mailboxes) })
	}
	wg.Wait()
}

// mailboxCache maps users to their mailboxes, computing each (an X25519
// key derivation) once.
type mailboxCache struct {
	plan Plan
	// mu protects m.
	mu sync.Mutex
	m  map[int][16]byte
}

func (c *mailboxCache) get(i int) [16]byte {
	c.mu.Lock()
	mb, ok := c.m[i]
	c.mu.Unlock()
	if ok {
		return mb
	}
	mb = wireMailbox(c.plan.Key(i).Public)
	c.mu.Lock()
	c.m[i] = mb
	c.mu.Unlock()
	return mb
}

func wireMailbox(pub [32]byte) [16]byte { return wire.MailboxID(pub) }

// sendLoop sends msgs, at rate per second (0: as fast as the window
// allows), keeping at most Window in flight.
func (u *user) sendLoop(msgs []int, start time.Time, rate float64, mbs *mailboxCache) {
	r := u.r
	for n, m := range msgs {
		if rate > 0 {
			// Senders start at staggered offsets so that they do not send
			// in step.
			at := start.Add(time.Duration((float64(n) + float64(u.i%97)/97) / rate * float64(time.Second)))
			if !sleepUntil(r.ctx, at) {
				return
			}
		}
		if !u.waitRoom(r.cfg.window()) {
			return
		}
		to := r.plan.recipient(m, u.i)
		payload := make([]byte, r.cfg.size())
		binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		binary.BigEndian.PutUint64(payload[8:], uint64(m))
		id := messageID(r.plan.Seed, m)
		s := &send{m: m, frame: mustFrame(wire.Send{ID: id, To: mbs.get(to), Token: r.plan.Token(to), Envelope: payload})}
		u.mu.Lock()
		u.inflight[id] = s
		u.mu.Unlock()
		u.transmit(s.frame)
	}
	u.waitRoom(1) // all answered
}

// transmit sends f on the current connection; without one, the next
// connection resends it.
func (u *user) transmit(f wire.Frame) {
	ch, gen := u.conn()
	if ch == nil {
		return
	}
	if err := ch.Send(u.r.ctx, f); err != nil {
		u.broken(gen, err)
	}
}

// waitRoom waits until fewer than n Sends are in flight, sending again
// those refused for now; it gives up after Quiet without an answer, or
// when the run ends.
func (u *user) waitRoom(n int) bool {
	quiet := time.NewTimer(u.r.cfg.quiet())
	defer quiet.Stop()
	for {
		u.mu.Lock()
		var again []wire.Frame
		for _, s := range u.inflight {
			if s.retry {
				s.retry = false
				again = append(again, s.frame)
			}
		}
		room := len(u.inflight) < n
		u.mu.Unlock()
		if len(again) > 0 {
			time.Sleep(20 * time.Millisecond) // the relay asked to wait
			for _, f := range again {
				u.transmit(f)
			}
		}
		if room {
			return true
		}
		select {
		case <-u.answered:
			quiet.Reset(u.r.cfg.quiet())
		case <-quiet.C:
			u.r.log.Warn("no answer to Sends in flight", "user", u.i)
			return false
		case <-u.r.ctx.Done():
			return false
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// toAck queues u, which has deliveries to acknowledge, for the ack loop.
func (r *runner) toAck(u *user) {
	r.ackMu.Lock()
	r.dirty = append(r.dirty, u)
	r.ackMu.Unlock()
}

// ackLoop acknowledges deliveries every 20ms, in batches, until ctx ends.
func (r *runner) ackLoop(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.flushAcks()
		}
	}
}

// flushAcks sends the acknowledgements queued so far.
func (r *runner) flushAcks() {
	r.ackMu.Lock()
	dirty := r.dirty
	r.dirty = nil
	r.ackMu.Unlock()
	for _, u := range dirty {
		u.mu.Lock()
		seqs := u.acks
		u.acks = nil
		ch, gen := u.ch, u.gen
		u.mu.Unlock()
		if ch == nil {
			continue // the relay delivers them again after the reconnect
		}
		for len(seqs) > 0 {
			n := min(len(seqs), wire.MaxAcks)
			if err := sendMsg(r.ctx, ch, wire.Ack{Seqs: seqs[:n]}); err != nil {
				u.broken(gen, err)
				break
			}
			seqs = seqs[n:]
		}
	}
}
