package relay

import (
	"context"
	"errors"
	"sync"

	"golang.org/x/sync/semaphore"

	"github.com/ferry-im/ferry/wire"
)

// maxSendsInFlight and maxSendBytesInFlight bound the Sends of one
// connection that are being stored at once, in number and in envelope
// bytes (one envelope of any allowed size always fits). Past them the
// connection's reader waits, which pushes back on the client through the
// transport.
const (
	maxSendsInFlight     = 64
	maxSendBytesInFlight = 1 << 20
)

// pendingSend is one Send between its checks and its answer.
type pendingSend struct {
	size   int // what acquire took
	id, to [16]byte
	env    Envelope
	// wait collects the store's result; nil when a check already failed.
	wait func() (uint64, bool, error)
	// ready reports whether wait would return at once.
	ready func() bool
	// result, code and msg describe a failed check.
	result string
	code   wire.Code
	msg    string
}

// sendPipe answers a connection's Sends in the order they arrived. The
// reader starts each Put (with AsyncPutter, without waiting for it, so
// the writes of one connection share group commits) and queues it here; a
// goroutine, running only while Sends are in flight, waits for each in
// turn, publishes the stored envelope and answers it. Answers whose
// results are in together (one group commit stored them) go out in one
// write (channel.Conn.SendBatch); an answer is never held back to wait for
// a later Put.
type sendPipe struct {
	slots chan struct{}       // one token per Send in flight; made on first use
	bytes *semaphore.Weighted // envelope bytes in flight; made on first use
	wg    sync.WaitGroup

	// mu protects queue and running.
	mu      sync.Mutex
	queue   []pendingSend
	running bool
}

// acquire takes a slot and size bytes for a new Send, waiting while the
// pipe is full, and the same bytes from the relay-wide budget (global,
// nil if none), waiting while it is spent. Only the reader calls it.
func (p *sendPipe) acquire(ctx context.Context, size int, s *Server) error {
	if p.slots == nil {
		p.slots = make(chan struct{}, maxSendsInFlight)
		p.bytes = semaphore.NewWeighted(maxSendBytesInFlight)
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	n := int64(min(size, maxSendBytesInFlight))
	if err := p.bytes.Acquire(ctx, n); err != nil {
		<-p.slots
		return err
	}
	if s.sendMem != nil {
		if err := s.sendMem.Acquire(ctx, min(n, s.budgets.SendMemory)); err != nil {
			p.bytes.Release(n)
			<-p.slots
			return err
		}
		s.sendInFlight.Add(n)
	}
	return nil
}

// release gives back what acquire took for a Send of size bytes.
func (p *sendPipe) release(size int, s *Server) {
	n := int64(min(size, maxSendBytesInFlight))
	if s.sendMem != nil {
		s.sendInFlight.Add(-n)
		s.sendMem.Release(min(n, s.budgets.SendMemory))
	}
	p.bytes.Release(n)
	<-p.slots
}

// push queues s (its slot acquired) and makes sure a goroutine answers it.
func (p *sendPipe) push(c *conn, s pendingSend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queue = append(p.queue, s)
	if !p.running {
		p.running = true
		p.wg.Add(1)
		go p.run(c)
	}
}

// wait returns once every queued Send is answered. Only the reader calls
// it, after it has stopped reading.
func (p *sendPipe) wait() { p.wg.Wait() }

// maxAnswerBatch bounds the answers sent in one SendBatch.
const maxAnswerBatch = 64

func (p *sendPipe) run(c *conn) {
	defer p.wg.Done()
	broken := false // the channel failed: keep collecting results, stop answering
	var answers []wire.Frame
	flush := func() {
		if !broken {
			if err := c.ch.SendBatch(c.work, answers); err != nil {
				broken = true
			}
		}
		clear(answers)
		answers = answers[:0]
	}
	for {
		p.mu.Lock()
		if len(p.queue) == 0 && len(answers) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		// Send what is answered before waiting for a result not yet in.
		if len(answers) > 0 && (len(p.queue) == 0 || len(answers) == maxAnswerBatch || !p.queue[0].isReady()) {
			p.mu.Unlock()
			flush()
			continue
		}
		s := p.queue[0]
		p.queue[0] = pendingSend{}
		p.queue = p.queue[1:]
		p.mu.Unlock()

		answer := c.finishSend(s)
		p.release(s.size, c.s)
		f, err := wire.NewFrame(answer)
		if err != nil {
			// SendOK and SendErr (its message is bounded) always marshal;
			// should one not, the client must not wait for it forever.
			c.log.Error("marshal answer", "err", err)
			c.ch.Close()
			broken = true
			continue
		}
		answers = append(answers, f)
	}
}

// isReady reports whether s's result can be collected without waiting.
func (s *pendingSend) isReady() bool { return s.wait == nil || s.ready != nil && s.ready() }

// finishSend waits for s's store result, counts it, publishes a newly
// stored envelope and returns the answer for the client.
func (c *conn) finishSend(s pendingSend) wire.Message {
	fail := func(result string, code wire.Code, msg string) wire.Message {
		c.s.metrics.sends.WithLabelValues(result).Inc()
		return wire.SendErr{ID: s.id, Code: code, Msg: msg}
	}
	if s.wait == nil {
		return fail(s.result, s.code, s.msg)
	}
	seq, dup, err := s.wait()
	switch {
	case errors.Is(err, ErrQuota):
		return fail("quota", wire.CodeQuota, "recipient mailbox is full")
	case errors.Is(err, ErrNotFound):
		return fail("denied", wire.CodeDenied, "unknown mailbox or wrong delivery token")
	case err != nil:
		if c.work.Err() == nil {
			c.log.Error("store envelope", "err", err)
		}
		return fail("error", wire.CodeUnavailable, "storage unavailable")
	}
	if dup {
		c.s.metrics.sends.WithLabelValues("duplicate").Inc()
	} else {
		c.s.metrics.sends.WithLabelValues("stored").Inc()
	}
	if seq > 0 && (!dup || c.s.cluster != nil) {
		// In a cluster a retry (dup) is pushed again too: the first
		// attempt may have been stored by a relay that died before it
		// could announce it, and the retry is the client's sign of that.
		// A subscriber may then see it twice; clients de-duplicate by id.
		env := s.env
		env.Seq = seq
		c.s.hub.publish(c.work, s.to, env)
	}
	return wire.SendOK{ID: s.id}
}
