package load

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/wire"
)

// user is one simulated user: a connection that reconnects when it
// breaks, its mailbox, and its Sends in flight.
type user struct {
	r       *runner
	i       int // in the plan
	key     channel.KeyPair
	mailbox [16]byte
	token   [32]byte

	// mu protects the fields below.
	mu       sync.Mutex
	ch       *channel.Conn // nil while reconnecting
	gen      int           // incremented by every new connection
	ep       int           // index of the endpoint in use
	inflight map[[16]byte]*send
	acks     []uint64
	answered chan struct{} // signalled when a Send in flight is answered
}

// send is one message on its way.
type send struct {
	m     int
	frame wire.Frame
	retry bool // answered with a temporary error: send again
}

// connectAll sets up every user of this process, Parallel at a time.
func (r *runner) connectAll() error {
	lo, hi := r.plan.Lo(r.cfg.Proc), r.plan.Lo(r.cfg.Proc+1)
	r.users = make([]*user, hi-lo)
	errs := make(chan error, 1)
	sem := make(chan struct{}, r.cfg.parallel())
	var wg sync.WaitGroup
	for i := lo; i < hi; i++ {
		sem <- struct{}{}
		if r.ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			u := &user{r: r, i: i, key: r.plan.Key(i), token: r.plan.Token(i), ep: i % len(r.cfg.Endpoints),
				inflight: map[[16]byte]*send{}, answered: make(chan struct{}, 1)}
			u.mailbox = channel.MailboxID(u.key.Public)
			r.usersMu.Lock()
			r.users[i-lo] = u
			r.usersMu.Unlock()
			if err := u.setupRetrying(); err != nil {
				select {
				case errs <- fmt.Errorf("set up user %d: %w", i, err):
				default:
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	return r.ctx.Err()
}

// dial connects u to its endpoint from its source address.
func (u *user) dial(ctx context.Context) (*channel.Conn, error) {
	cfg := u.r.cfg
	var d net.Dialer
	if n := len(cfg.Sources); n > 0 {
		d.LocalAddr = &net.TCPAddr{IP: cfg.Sources[u.i%n].AsSlice()}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nc, err := d.DialContext(ctx, "tcp", cfg.Endpoints[u.ep].Addr)
	if err != nil {
		return nil, err
	}
	return channel.Client(ctx, nc, u.key, cfg.Relay)
}

// setupRetrying sets u up, trying again for a while: a relay busy with
// thousands of connections arriving at once may time out some.
func (u *user) setupRetrying() error {
	backoff := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := u.setup()
		if err == nil || attempt == 8 || u.r.ctx.Err() != nil {
			return err
		}
		u.r.errs.Add(1)
		u.r.log.Debug("set up user: trying again", "user", u.i, "err", err)
		time.Sleep(backoff)
		backoff = min(2*backoff, 10*time.Second)
	}
}

// setup connects u for the first time: it registers its token and
// subscribes, waiting for each answer, then starts reading.
func (u *user) setup() error {
	ch, err := u.dial(u.r.ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(u.r.ctx, 30*time.Second)
	defer cancel()
	for _, m := range []wire.Message{wire.SetToken{ReqID: 1, Token: u.token}, wire.Subscribe{ReqID: 2}} {
		if err := sendMsg(ctx, ch, m); err != nil {
			ch.Close()
			return err
		}
		if err := awaitOK(ctx, ch, u); err != nil {
			ch.Close()
			return fmt.Errorf("%v: %w", m.Type(), err)
		}
	}
	u.mu.Lock()
	u.ch, u.gen = ch, 1
	u.mu.Unlock()
	go u.readLoop(ch, 1)
	return nil
}

// awaitOK reads frames until an OK, handing Delivers (a backlog) to u.
func awaitOK(ctx context.Context, ch *channel.Conn, u *user) error {
	for {
		f, err := ch.Recv(ctx)
		if err != nil {
			return err
		}
		m, err := wire.Decode(f)
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case wire.OK:
			return nil
		case wire.Deliver:
			u.delivered(m)
		case wire.Error:
			return m
		}
	}
}

func sendMsg(ctx context.Context, ch *channel.Conn, m wire.Message) error {
	f, err := wire.NewFrame(m)
	if err != nil {
		return err
	}
	return ch.Send(ctx, f)
}

// readLoop handles what the relay sends on connection gen until it breaks.
func (u *user) readLoop(ch *channel.Conn, gen int) {
	for {
		f, err := ch.Recv(context.Background())
		if err != nil {
			u.broken(gen, err)
			return
		}
		m, err := wire.Decode(f)
		if err != nil {
			continue // a frame type this generator does not know
		}
		switch m := m.(type) {
		case wire.Deliver:
			u.delivered(m)
		case wire.SendOK:
			u.answer(m.ID, nil)
		case wire.SendErr:
			u.answer(m.ID, &m)
		}
	}
}

// delivered records a pushed envelope and queues its acknowledgement.
func (u *user) delivered(d wire.Deliver) {
	if len(d.Envelope) >= 16 {
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(d.Envelope)))
		u.r.recv.deliver(int(binary.BigEndian.Uint64(d.Envelope[8:])), d.Seq, sent)
	}
	u.mu.Lock()
	first := len(u.acks) == 0
	u.acks = append(u.acks, d.Seq)
	u.mu.Unlock()
	if first {
		u.r.toAck(u)
	}
}

// answer settles the Send of id: done, or to be sent again (a temporary
// refusal), or refused for good.
func (u *user) answer(id [16]byte, e *wire.SendErr) {
	u.mu.Lock()
	s := u.inflight[id]
	switch {
	case s == nil:
	case e == nil:
		delete(u.inflight, id)
		u.r.sent.Add(1)
	case e.Code.Temporary():
		s.retry = true
	default:
		delete(u.inflight, id)
		u.r.refused.Add(1)
		u.r.log.Debug("send refused", "user", u.i, "code", e.Code, "msg", e.Msg)
	}
	u.mu.Unlock()
	select {
	case u.answered <- struct{}{}:
	default:
	}
}

// broken handles the end of connection gen: unless the run is over, u
// dials again (the next endpoint), subscribes, and resends what is in
// flight.
func (u *user) broken(gen int, err error) {
	u.mu.Lock()
	if u.gen != gen || u.ch == nil {
		u.mu.Unlock()
		return // handled already
	}
	old := u.ch
	u.ch = nil
	u.mu.Unlock()
	old.Close()
	if u.r.closed.Load() {
		return
	}
	u.r.errs.Add(1)
	u.r.log.Debug("connection broken", "user", u.i, "err", err)
	go u.reconnect(gen)
}

// reconnect dials until it has a new connection or the run ends.
func (u *user) reconnect(gen int) {
	backoff := 50 * time.Millisecond
	for u.r.ctx.Err() == nil && !u.r.closed.Load() {
		u.mu.Lock()
		u.ep = (u.ep + 1) % len(u.r.cfg.Endpoints)
		u.mu.Unlock()
		ch, err := u.dial(u.r.ctx)
		if err == nil {
			u.resume(ch, gen+1)
			return
		}
		u.r.errs.Add(1)
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

// resume makes ch u's connection: it subscribes and resends the Sends in
// flight, with their ids, so the relay stores each at most once.
func (u *user) resume(ch *channel.Conn, gen int) {
	u.r.reconnects.Add(1)
	u.mu.Lock()
	u.ch, u.gen = ch, gen
	var again []wire.Frame
	for _, s := range u.inflight {
		again = append(again, s.frame)
	}
	u.mu.Unlock()
	go u.readLoop(ch, gen)
	frames := append([]wire.Frame{mustFrame(wire.Subscribe{ReqID: 3})}, again...)
	if err := ch.SendBatch(u.r.ctx, frames); err != nil {
		u.broken(gen, err)
	}
}

func mustFrame(m wire.Message) wire.Frame {
	f, err := wire.NewFrame(m)
	if err != nil {
		panic(err)
	}
	return f
}

// conn returns u's connection and its generation, or nil while it
// reconnects.
func (u *user) conn() (*channel.Conn, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.ch, u.gen
}

// ping sends a Ping, so that the relay does not close an idle connection.
func (u *user) ping() {
	if ch, gen := u.conn(); ch != nil {
		if err := sendMsg(u.r.ctx, ch, wire.Ping{Nonce: 1}); err != nil {
			u.broken(gen, err)
		}
	}
}

func (u *user) close() {
	u.mu.Lock()
	ch := u.ch
	u.gen = -1
	u.mu.Unlock()
	if ch != nil {
		ch.Close()
	}
}
