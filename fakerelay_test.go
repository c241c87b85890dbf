package ferry

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/wire"
)

// fakeRelay is an in-memory relay speaking the frames of docs/protocol.md
// section 6 closely enough for the client's tests: tokens, prekeys,
// idempotent sends, mailboxes with at-least-once delivery and Ack. It can
// be taken down (dials fail, connections drop) and brought back.
type fakeRelay struct {
	link link.Relay

	mu      sync.Mutex // protects everything below
	down    bool
	tokens  map[[16]byte][32]byte
	signed  map[[16]byte][]byte
	lastRes map[[16]byte][]byte
	oneTime map[[16]byte][]wire.Prekey
	kem     map[[16]byte][]wire.Prekey
	boxes   map[[16]byte]*fakeBox
	conns   map[*fakeConn]bool
	sends   int // Send frames seen
	busy    int // answer this many more Sends with CodeRateLimited
	// withholdOK makes Subscribe push the backlog but never answer, as a
	// misbehaving relay would.
	withholdOK bool
	// recipients records, per sending key's mailbox, the mailboxes it
	// sent to.
	recipients map[[16]byte]map[[16]byte]bool
	wg         sync.WaitGroup
}

type fakeBox struct {
	nextSeq uint64
	ids     map[[16]byte]bool
	queue   []wire.Deliver
	subs    map[*fakeConn]bool
}

func newFakeRelay() *fakeRelay {
	return &fakeRelay{
		link:   link.Relay{Key: [32]byte{1}, Endpoints: []link.Endpoint{{Transport: "tcp", Addr: "127.0.0.1:1"}}},
		tokens: map[[16]byte][32]byte{}, signed: map[[16]byte][]byte{}, lastRes: map[[16]byte][]byte{},
		oneTime: map[[16]byte][]wire.Prekey{}, kem: map[[16]byte][]wire.Prekey{},
		boxes: map[[16]byte]*fakeBox{}, conns: map[*fakeConn]bool{},
	}
}

func (r *fakeRelay) box(mb [16]byte) *fakeBox {
	b := r.boxes[mb]
	if b == nil {
		b = &fakeBox{ids: map[[16]byte]bool{}, subs: map[*fakeConn]bool{}}
		r.boxes[mb] = b
	}
	return b
}

// setDown takes the relay down (dropping every connection) or back up.
func (r *fakeRelay) setDown(down bool) {
	r.mu.Lock()
	r.down = down
	var drop []*fakeConn
	if down {
		for c := range r.conns {
			drop = append(drop, c)
		}
	}
	r.mu.Unlock()
	for _, c := range drop {
		c.Close()
	}
}

func (r *fakeRelay) close() {
	r.setDown(true)
	r.wg.Wait()
}

func (r *fakeRelay) dial(ctx context.Context, l link.Relay, static channel.KeyPair) (frameConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down || l.Key != r.link.Key {
		return nil, ErrUnreachable
	}
	c := &fakeConn{r: r, mailbox: wire.MailboxID(static.Public), toClient: make(chan wire.Frame, 1<<14), toRelay: make(chan wire.Frame, 1<<14), quit: make(chan struct{})}
	r.conns[c] = true
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		c.serve()
	}()
	return c, nil
}

// fakeConn is both ends of one connection.
type fakeConn struct {
	r        *fakeRelay
	mailbox  [16]byte
	toClient chan wire.Frame
	toRelay  chan wire.Frame
	quit     chan struct{}
	once     sync.Once
}

func (c *fakeConn) Send(ctx context.Context, f wire.Frame) error {
	select {
	case c.toRelay <- f:
		return nil
	case <-c.quit:
		return errors.New("connection closed")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *fakeConn) Recv(ctx context.Context) (wire.Frame, error) {
	select {
	case f := <-c.toClient:
		return f, nil
	case <-c.quit:
		return wire.Frame{}, io.EOF
	case <-ctx.Done():
		return wire.Frame{}, ctx.Err()
	}
}

func (c *fakeConn) Close() error {
	c.once.Do(func() {
		close(c.quit)
		c.r.mu.Lock()
		delete(c.r.conns, c)
		for _, b := range c.r.boxes {
			delete(b.subs, c)
		}
		c.r.mu.Unlock()
	})
	return nil
}

// push queues a frame for the client; the caller holds r.mu.
func (c *fakeConn) push(m wire.Message) {
	f, err := wire.NewFrame(m)
	if err != nil {
		panic(err)
	}
	select {
	case c.toClient <- f:
	default: // client hopelessly behind: drop the connection
		go c.Close()
	}
}

func (c *fakeConn) serve() {
	for {
		var f wire.Frame
		select {
		case f = <-c.toRelay:
		case <-c.quit:
			return
		}
		m, err := wire.Decode(f)
		if err != nil {
			continue
		}
		r := c.r
		r.mu.Lock()
		switch m := m.(type) {
		case wire.SetToken:
			r.tokens[c.mailbox] = m.Token
			c.push(wire.OK{ReqID: m.ReqID})
		case wire.PutPrekeys:
			if m.Signed != nil {
				r.signed[c.mailbox] = m.Signed
			}
			if m.LastResort != nil {
				r.lastRes[c.mailbox] = m.LastResort
			}
			r.oneTime[c.mailbox] = append(r.oneTime[c.mailbox], m.OneTime...)
			r.kem[c.mailbox] = append(r.kem[c.mailbox], m.KEM...)
			c.push(wire.OK{ReqID: m.ReqID})
		case wire.GetBundle:
			if tok, ok := r.tokens[m.Mailbox]; !ok || tok != m.Token || r.signed[m.Mailbox] == nil {
				c.push(wire.Error{ReqID: m.ReqID, Code: wire.CodeDenied})
				break
			}
			b := wire.Bundle{ReqID: m.ReqID, Signed: r.signed[m.Mailbox]}
			if ot := r.oneTime[m.Mailbox]; len(ot) > 0 {
				b.OneTimeID, b.OneTime = ot[0].ID, ot[0].Data
				r.oneTime[m.Mailbox] = ot[1:]
			}
			if k := r.kem[m.Mailbox]; len(k) > 0 {
				b.KEMID, b.KEM = k[0].ID, k[0].Data
				r.kem[m.Mailbox] = k[1:]
			} else {
				b.KEM, b.KEMLastResort = r.lastRes[m.Mailbox], true
			}
			c.push(b)
		case wire.Send:
			r.sends++
			if r.recipients == nil {
				r.recipients = map[[16]byte]map[[16]byte]bool{}
			}
			if r.recipients[c.mailbox] == nil {
				r.recipients[c.mailbox] = map[[16]byte]bool{}
			}
			r.recipients[c.mailbox][m.To] = true
			if r.busy > 0 {
				r.busy--
				c.push(wire.SendErr{ID: m.ID, Code: wire.CodeRateLimited})
				break
			}
			if tok, ok := r.tokens[m.To]; !ok || tok != m.Token {
				c.push(wire.SendErr{ID: m.ID, Code: wire.CodeDenied})
				break
			}
			b := r.box(m.To)
			if !b.ids[m.ID] {
				b.ids[m.ID] = true
				b.nextSeq++
				d := wire.Deliver{Seq: b.nextSeq, ID: m.ID, Received: 1, Envelope: m.Envelope}
				b.queue = append(b.queue, d)
				for s := range b.subs {
					s.push(d)
				}
			}
			c.push(wire.SendOK{ID: m.ID})
		case wire.Subscribe:
			b := r.box(c.mailbox)
			b.subs[c] = true
			// The backlog, then the OK (docs/protocol.md section 6.4).
			for _, d := range b.queue {
				c.push(d)
			}
			if !r.withholdOK {
				c.push(wire.OK(m))
			}
		case wire.Ack:
			b := r.box(c.mailbox)
			acked := map[uint64]bool{}
			for _, s := range m.Seqs {
				acked[s] = true
			}
			kept := b.queue[:0]
			for _, d := range b.queue {
				if !acked[d.Seq] {
					kept = append(kept, d)
				}
			}
			b.queue = kept
		case wire.Ping:
			c.push(wire.Pong(m))
		}
		r.mu.Unlock()
	}
}

// pending returns how many envelopes wait in mailbox mb.
func (r *fakeRelay) pending(mb [16]byte) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.box(mb).queue)
}

// pendingAfterAcks returns how many envelopes wait in the mailboxes once
// the acks a client sent have been read, waiting up to 5 s for them: acks
// are not answered, so the fake relay may still be reading the last one
// when a Sync returns.
func (r *fakeRelay) pendingAfterAcks(mbs ...[16]byte) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := 0
		for _, mb := range mbs {
			n += r.pending(mb)
		}
		if n == 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// redeliver pushes every stored envelope of mb again to its subscribers
// (as a relay does after a reconnect), to exercise de-duplication.
func (r *fakeRelay) inject(mb [16]byte, d wire.Deliver) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.box(mb)
	b.queue = append(b.queue, d)
}
