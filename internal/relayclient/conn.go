package relayclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport/fallback"
	"github.com/ferry-im/ferry/wire"
)

// Conn is one connection to a relay. Its methods are safe for concurrent
// use. A reader goroutine, owned by the Conn, reads every frame and hands
// it to its handler (one per frame type, as the relay's own dispatch does):
// answers go to the request waiting for them, Delivers to the mailbox
// queue, Pings are answered at once. Another goroutine pings the relay
// when the connection is quiet and closes it when the relay stops
// answering. Close stops both and waits for them.
type Conn struct {
	ch      *channel.Conn
	watch   *fallback.Watched // the transport conn under ch
	ep      link.Endpoint     // what ch runs over
	fb      *fallback.Dialer  // told when the transport stalls; nil if none
	routes  *routes
	stalled atomic.Pointer[string] // why health closed the connection
	log     *slog.Logger
	timeout time.Duration // RequestTimeout
	reqID   atomic.Uint32
	heard   atomic.Int64 // unix nanoseconds of the last frame read
	// active and prevActive are the times of the last two frames other than
	// Pongs: how busy the conversation on the connection is.
	active, prevActive atomic.Int64

	mu       sync.Mutex // mu protects waiters, sending and box
	waiters  map[uint32]chan wire.Message
	sending  map[[16]byte]chan wire.Message
	box      mailbox
	boxReady chan struct{}  // capacity 1: box changed
	pongs    chan wire.Pong // the relay's Pings to answer, for keepAlive

	done chan struct{} // closed when the reader exits
	err  error         // why; read after done
	quit chan struct{} // closed by Close
	once sync.Once
	wg   sync.WaitGroup
}

func newConn(x *dialed, fb *fallback.Dialer, rs *routes, d *Dialer) *Conn {
	c := &Conn{
		ch: x.ch, watch: x.w, ep: x.ep, fb: fb, routes: rs,
		log: d.logger(), timeout: orDefault(d.RequestTimeout, DefaultRequestTimeout),
		waiters: make(map[uint32]chan wire.Message), sending: make(map[[16]byte]chan wire.Message),
		boxReady: make(chan struct{}, 1), pongs: make(chan wire.Pong, 1), done: make(chan struct{}), quit: make(chan struct{}),
	}
	c.heard.Store(time.Now().UnixNano())
	c.wg.Add(3)
	go c.read()
	go c.keepAlive(orDefault(d.PingInterval, DefaultPingInterval))
	go c.health(context.Background())
	return c
}

// Close closes the connection and waits for its goroutines. It is
// idempotent.
func (c *Conn) Close() error {
	var err error
	c.once.Do(func() {
		close(c.quit)
		err = c.ch.Close()
	})
	c.wg.Wait()
	return err
}

// Endpoint returns the relay endpoint (transport and address) the
// connection was made to.
func (c *Conn) Endpoint() link.Endpoint { return c.ep }

// Done is closed when the connection has ended; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended (wrapping ErrUnreachable), or nil
// while it is up.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// read reads frames until the channel fails or closes.
func (c *Conn) read() {
	defer c.wg.Done()
	defer close(c.done)
	for {
		f, err := c.ch.Recv(context.Background())
		if err != nil {
			if why := c.stalled.Load(); why != nil {
				c.err = fmt.Errorf("%w: %s (%w)", ErrUnreachable, *why, ErrStalled)
				return
			}
			c.err = fmt.Errorf("%w: connection lost: %v", ErrUnreachable, err)
			return
		}
		now := time.Now().UnixNano()
		c.heard.Store(now)
		if f.Type != wire.TypePong {
			c.prevActive.Store(c.active.Swap(now))
		}
		if err := c.handle(f); err != nil {
			c.err = err
			c.ch.Close()
			return
		}
	}
}

// handle dispatches one frame. Unknown frame types are skipped; a
// malformed frame ends the connection.
func (c *Conn) handle(f wire.Frame) error {
	m, err := wire.Decode(f)
	if errors.Is(err, wire.ErrUnknownType) {
		c.log.Debug("skipping unknown frame", "type", f.Type.String())
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: malformed %v frame from the relay: %v", ErrUnreachable, f.Type, err)
	}
	if answers(m) {
		c.watch.Answered()
	}
	switch m := m.(type) {
	case wire.Ping:
		return c.handlePing(m)
	case wire.Pong:
		return nil
	case wire.OK:
		return c.handleAnswer(m.ReqID, m)
	case wire.Error:
		return c.handleError(m)
	case wire.Bundle:
		return c.handleAnswer(m.ReqID, m)
	case wire.PrekeyCount:
		return c.handleAnswer(m.ReqID, m)
	case wire.Rankings:
		return c.handleAnswer(m.ReqID, m)
	case wire.SendOK:
		return c.handleSendAnswer(m.ID, m)
	case wire.SendErr:
		return c.handleSendAnswer(m.ID, m)
	case wire.Deliver:
		return c.handleDeliver(m)
	case wire.BlobState:
		return c.handleAnswer(m.ReqID, m)
	case wire.BlobData:
		return c.handleAnswer(m.ReqID, m)
	case wire.FanoutResult:
		return c.handleSendAnswer(m.ID, m)
	}
	c.log.Debug("skipping a frame only clients send", "type", f.Type.String())
	return nil
}

// handlePing has keepAlive answer the Ping: the reader never writes, so
// it never waits for the relay to read. If an answer is still pending,
// the Ping is dropped (the relay only needs to hear from us).
func (c *Conn) handlePing(m wire.Ping) error {
	select {
	case c.pongs <- wire.Pong(m):
	default:
	}
	return nil
}

// handleError passes a request's Error to its waiter; an Error for no
// request (ReqID 0) is the relay saying why it ends the connection.
func (c *Conn) handleError(m wire.Error) error {
	if m.ReqID == 0 {
		return fmt.Errorf("%w: the relay closed the connection: %s (%s)", ErrUnreachable, m.Code, m.Msg)
	}
	return c.handleAnswer(m.ReqID, m)
}

// handleAnswer hands an answer to the request waiting for it; an answer
// nobody waits for (a request that timed out) is dropped.
func (c *Conn) handleAnswer(id uint32, m wire.Message) error {
	if c.subscribeAnswer(id, m) {
		return nil
	}
	c.mu.Lock()
	w := c.waiters[id]
	delete(c.waiters, id)
	c.mu.Unlock()
	if w != nil {
		w <- m // buffered
	}
	return nil
}

func (c *Conn) handleSendAnswer(id [16]byte, m wire.Message) error {
	c.mu.Lock()
	w := c.sending[id]
	delete(c.sending, id)
	c.mu.Unlock()
	if w != nil {
		w <- m // buffered for the whole batch
	}
	return nil
}

// keepAlive answers the relay's Pings, pings the relay when nothing was
// heard for interval, and closes the connection when nothing was heard
// for interval plus the request timeout: a relay always answers a Ping.
func (c *Conn) keepAlive(interval time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(min(interval, activeTick))
	defer t.Stop()
	var pinged time.Time
	for {
		select {
		case p := <-c.pongs:
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			c.send(ctx, p)
			cancel()
			continue
		case <-t.C:
		case <-c.quit:
			return
		case <-c.done:
			return
		}
		quiet := time.Since(time.Unix(0, c.heard.Load()))
		if quiet >= interval+c.timeout {
			c.log.Info("relay stopped answering; closing the connection", "quiet", quiet.Round(time.Second).String())
			c.ch.Close()
			return
		}
		if wait := c.pingAfter(interval); quiet >= wait && time.Since(pinged) >= wait {
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			c.send(ctx, wire.Ping{Nonce: uint64(time.Now().UnixNano())})
			cancel()
			pinged = time.Now()
		}
	}
}

// Pings on a busy connection (docs/transports.md section 7): for activeGap
// after two frames that came within activeGap of each other, a silence of
// activeQuiet is worth a ping, so that a censor's drop in the middle of a
// conversation shows within seconds (the watcher closes the connection
// when the Pong does not come); otherwise the connection pings after
// interval of silence.
const (
	activeTick  = 250 * time.Millisecond
	activeGap   = 10 * time.Second
	activeQuiet = time.Second
)

// pingAfter is how long a silence is worth a ping now: activeQuiet within
// activeGap of the last two frames (Pongs aside) if they came within
// activeGap of each other, interval otherwise.
func (c *Conn) pingAfter(interval time.Duration) time.Duration {
	last, prev := c.active.Load(), c.prevActive.Load()
	if prev != 0 && time.Duration(last-prev) < activeGap && time.Since(time.Unix(0, last)) < activeGap {
		return min(activeQuiet, interval)
	}
	return interval
}

// send marshals and sends one message.
func (c *Conn) send(ctx context.Context, m wire.Message) error {
	f, err := wire.NewFrame(m)
	if err != nil {
		return err
	}
	if awaited(m) {
		c.watch.Awaiting()
	}
	return c.ch.Send(ctx, f)
}

// awaited reports whether the relay answers m soon: the watcher then
// waits for the answer. A Subscribe's answer comes after the backlog, so
// it is not awaited; Pongs and Acks are not answered.
func awaited(m wire.Message) bool {
	switch m.(type) {
	case wire.Ping, wire.SetToken, wire.AddToken, wire.RemoveToken, wire.PutPrekeys, wire.GetBundle, wire.GetPrekeyCount:
		return true
	}
	return false
}

// answers reports whether m answers an awaited request (or a Send).
func answers(m wire.Message) bool {
	switch m := m.(type) {
	case wire.Pong, wire.Bundle, wire.PrekeyCount, wire.SendOK, wire.SendErr:
		return true
	case wire.OK:
		return true
	case wire.Error:
		return m.ReqID != 0
	}
	return false
}

// lost wraps a failure to send on the connection.
func lost(err error) error {
	if errors.Is(err, ErrUnreachable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrUnreachable, err)
}

// request sends a request built for a fresh request id and waits for its
// answer (OK, Error, Bundle or Rankings). An Error comes back as a
// *RefusedError.
func (c *Conn) request(ctx context.Context, build func(id uint32) wire.Message) (wire.Message, error) {
	id := c.reqID.Add(1)
	if id == 0 { // 0 means "no request"; skip it when the counter wraps
		id = c.reqID.Add(1)
	}
	w := make(chan wire.Message, 1)
	c.mu.Lock()
	c.waiters[id] = w
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters, id)
		c.mu.Unlock()
	}()
	m := build(id)
	if err := c.send(ctx, m); err != nil {
		return nil, lost(fmt.Errorf("send %v: %w", m.Type(), err))
	}
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case a := <-w:
		if e, ok := a.(wire.Error); ok {
			return nil, &RefusedError{Request: m.Type(), Code: e.Code, Msg: e.Msg}
		}
		return a, nil
	case <-c.done:
		return nil, c.err
	case <-t.C:
		return nil, fmt.Errorf("%w: no answer to %v within %v", ErrUnreachable, m.Type(), c.timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// RefusedError is the relay's Error answer to a request.
type RefusedError struct {
	Request wire.Type
	Code    wire.Code
	Msg     string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the relay refused %v: %s (%s)", e.Request, e.Code, e.Msg)
}

// SetToken registers the delivery token of the connection's mailbox.
func (c *Conn) SetToken(ctx context.Context, token [32]byte) error {
	_, err := c.request(ctx, func(id uint32) wire.Message { return wire.SetToken{ReqID: id, Token: token} })
	return err
}

// AddToken adds a delivery token to the connection's mailbox (a contact's
// or an invite's own, docs/protocol.md section 6.2).
func (c *Conn) AddToken(ctx context.Context, token [32]byte) error {
	_, err := c.request(ctx, func(id uint32) wire.Message { return wire.AddToken{ReqID: id, Token: token} })
	return err
}

// RemoveToken revokes one delivery token of the connection's mailbox.
func (c *Conn) RemoveToken(ctx context.Context, token [32]byte) error {
	_, err := c.request(ctx, func(id uint32) wire.Message { return wire.RemoveToken{ReqID: id, Token: token} })
	return err
}

// PrekeyCount asks how many one-time X25519 and ML-KEM prekeys the
// connection's mailbox has left at the relay. A relay that has no
// registration for the mailbox (never made, deleted as idle, or lost with
// a damaged database) answers with a *RefusedError of code CodeNotFound.
func (c *Conn) PrekeyCount(ctx context.Context) (oneTime, kem int, err error) {
	a, err := c.request(ctx, func(id uint32) wire.Message { return wire.GetPrekeyCount{ReqID: id} })
	if err != nil {
		return 0, 0, err
	}
	n, ok := a.(wire.PrekeyCount)
	if !ok {
		return 0, 0, fmt.Errorf("%w: the relay answered GetPrekeyCount with %v", ErrUnreachable, a.Type())
	}
	return int(n.OneTime), int(n.KEM), nil
}

// Lost reports whether err is the relay saying that the connection's own
// mailbox is not registered there (NotFound or Denied): the client then
// registers it again.
func Lost(err error) bool {
	var re *RefusedError
	return errors.As(err, &re) && (re.Code == wire.CodeNotFound || re.Code == wire.CodeDenied)
}

// PutPrekeys uploads prekeys for the connection's mailbox; p.ReqID is
// set here.
func (c *Conn) PutPrekeys(ctx context.Context, p wire.PutPrekeys) error {
	_, err := c.request(ctx, func(id uint32) wire.Message { p.ReqID = id; return p })
	return err
}

// GetBundle fetches a prekey bundle of mailbox mb, which token must
// unlock. A relay that does not know the mailbox, or the token, answers
// with a *RefusedError of code CodeDenied or CodeNotFound.
func (c *Conn) GetBundle(ctx context.Context, mb [16]byte, token [32]byte) (*wire.Bundle, error) {
	a, err := c.request(ctx, func(id uint32) wire.Message { return wire.GetBundle{ReqID: id, Mailbox: mb, Token: token} })
	if err != nil {
		return nil, err
	}
	b, ok := a.(wire.Bundle)
	if !ok {
		return nil, fmt.Errorf("%w: the relay answered GetBundle with %v", ErrUnreachable, a.Type())
	}
	return &b, nil
}

// PutRanking publishes a transport ranking blob (docs/protocol.md section
// 6.12); a relay that does not list the connection's key as a publisher
// answers with a *RefusedError of code CodeDenied.
func (c *Conn) PutRanking(ctx context.Context, blob []byte) error {
	_, err := c.request(ctx, func(id uint32) wire.Message { return wire.PutRanking{ReqID: id, Blob: blob} })
	return err
}

// GetRanking fetches the relay's transport rankings, with the client's
// address as the relay sees it. The blobs are unverified.
func (c *Conn) GetRanking(ctx context.Context) (wire.Rankings, error) {
	a, err := c.request(ctx, func(id uint32) wire.Message { return wire.GetRanking{ReqID: id} })
	if err != nil {
		return wire.Rankings{}, err
	}
	r, ok := a.(wire.Rankings)
	if !ok {
		return wire.Rankings{}, fmt.Errorf("%w: the relay answered GetRanking with %v", ErrUnreachable, a.Type())
	}
	return r, nil
}
