package relay

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/wire"
)

// conn is one authenticated client connection.
//
// An idle connection costs one goroutine, the one in ServeConn, blocked
// reading the channel; its stack stays small because nothing deep runs on
// it: the handshake runs on a goroutine of its own, and frames are handled
// by a handler goroutine that runs only while frames come (dispatch), as
// the send pipeline's and the push goroutines do. The idle timeout is
// checked by one server-wide reaper (idle.go), not a timer per connection.
type conn struct {
	s       *Server
	ch      *channel.Conn
	id      uint64
	log     *slog.Logger
	addr    string   // rate-limit key of the source address
	keyID   string   // rate-limit key of the client's static key
	mailbox [16]byte // the mailbox the client's key owns

	// work is the context of handlers and deliveries (ended by the
	// caller's ctx or Close); read, derived from it, also ends on
	// Shutdown, on the idle timeout and when a handler fails.
	work, read context.Context
	cancelRead context.CancelFunc
	lastFrame  atomic.Int64 // when the last frame came, as Server.since
	idle       atomic.Bool  // the reaper ended read

	frames   chan wire.Frame // at most one frame waiting for the handler; made on first use
	handlers sync.WaitGroup  // the handler goroutine
	// hmu protects handling and herr.
	hmu      sync.Mutex
	handling bool  // a handler goroutine runs
	herr     error // the error that ended handling

	sub        *subscriber    // set by the first Subscribe; handler goroutine only
	acks       ackWindow      // what this connection's Acks may name
	deliveries sync.WaitGroup // the subscriber's push goroutine
	pipe       sendPipe       // Sends in flight

	// subscribed is whether the connection has subscribed, for the
	// connection budget (read from other goroutines).
	subscribed atomic.Bool

	// refused counts the Acks and Subscribes refused in a row for their
	// rate (handler goroutine only).
	refused int
	stalled atomic.Bool // the reaper ended read for a stalled frame
}

// ackUnit is how many acknowledged seqs cost one token of Limits.AckRate.
const ackUnit = 64

// maxRefusedInARow is how many Acks and Subscribes in a row a connection
// may send over their rates before the relay closes it: refusing each
// still costs the relay its decryption and decoding, and no client that
// honours the limits comes near it.
const maxRefusedInARow = 100

// errAbuse ends a connection that kept sending far over a rate.
var errAbuse = errors.New("closing a connection that kept sending over its rate")

// overRate counts a refused Ack or Subscribe; past maxRefusedInARow in a
// row it returns errAbuse.
func (c *conn) overRate() error {
	if c.refused++; c.refused > maxRefusedInARow {
		return errAbuse
	}
	return nil
}

// errViolation marks a frame that ends the connection.
var errViolation = errors.New("protocol violation")

// errIdle ends a connection that has been silent for Limits.IdleTimeout,
// or whose frame in transit has stalled for Limits.FrameTimeout.
var errIdle = errors.New("connection idle: no frame within the idle timeout, or a frame stalled")

// setup makes the connection's contexts. Handlers run on work (ended by
// the caller's ctx or Close) so that Shutdown lets the frames in hand
// finish; reads stop on read (also ended by Shutdown, which cancels every
// tracked connection's read). A caller's ctx that never ends (the usual
// case) costs nothing: work is then the server's own.
func (c *conn) setup(ctx context.Context) (cleanup func()) {
	c.work = c.s.workCtx
	cancelWork := func() {}
	var unhook func() bool
	if ctx.Done() != nil {
		var cancel context.CancelFunc
		c.work, cancel = context.WithCancel(ctx)
		unhook = context.AfterFunc(c.s.workCtx, cancel)
		cancelWork = cancel
	}
	c.read, c.cancelRead = context.WithCancel(c.work)
	c.lastFrame.Store(c.s.since())
	return func() {
		c.cancelRead()
		if unhook != nil {
			unhook()
		}
		cancelWork()
	}
}

// serve reads and handles frames until the connection ends, then cleans
// up: on Shutdown the Sends in flight are answered before the channel
// closes; otherwise the channel closes first (the peer hung up or
// misbehaved) and they are only collected.
func (c *conn) serve() error {
	graceful, err := c.readLoop()
	if !graceful {
		c.ch.Close()
	}
	c.pipe.wait()
	if c.sub != nil {
		c.s.hub.remove(c.sub)
		c.sub.stop()
		c.s.metrics.subscribers.Dec()
	}
	c.ch.Close()
	c.deliveries.Wait()
	return err
}

// readLoop reads frames and hands them to the handler goroutine until the
// connection ends, and returns once the handler is done. graceful reports
// a Shutdown (a clean hang-up returns a nil error too, not graceful).
func (c *conn) readLoop() (graceful bool, err error) {
	defer c.handlers.Wait()
	for {
		f, err := c.ch.Recv(c.read)
		if err != nil {
			c.handlers.Wait()
			c.hmu.Lock()
			herr := c.herr
			c.hmu.Unlock()
			switch {
			case herr != nil:
				return false, herr
			case errors.Is(err, io.EOF):
				return false, nil
			case c.read.Err() != nil && c.s.readCtx.Err() != nil:
				return true, nil // shutdown
			case c.stalled.Load():
				return false, fmt.Errorf("a frame in transit for over %v: %w", c.s.limits.FrameTimeout, errIdle)
			case c.idle.Load():
				return false, fmt.Errorf("no frame for %v: %w", c.s.limits.IdleTimeout, errIdle)
			case c.read.Err() != nil:
				return false, c.read.Err()
			}
			return false, fmt.Errorf("read frame: %w", err)
		}
		c.lastFrame.Store(c.s.since())
		c.s.metrics.frame(f.Type)
		c.dispatch(f)
	}
}

// dispatch hands f to the handler goroutine, starting one if none runs.
// It waits while an earlier frame is still waiting, so the reader runs at
// most one frame ahead of the handler (and a handler that waits, e.g. for
// room in the send pipeline, stops the reading).
func (c *conn) dispatch(f wire.Frame) {
	if c.frames == nil {
		c.frames = make(chan wire.Frame, 1)
	}
	c.frames <- f
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if !c.handling {
		c.handling = true
		c.handlers.Add(1)
		go c.handleFrames()
	}
}

// handleFrames handles the frames dispatch hands over, in order, until
// none is waiting. After a handler fails, the frames still coming are
// dropped and the read is cancelled, which ends readLoop with that error.
func (c *conn) handleFrames() {
	defer c.handlers.Done()
	yielded := false
	for {
		c.hmu.Lock()
		if len(c.frames) == 0 {
			if !yielded {
				// The next frame is often a moment away (a client
				// pipelining Sends): wait for it rather than leave and
				// start again.
				c.hmu.Unlock()
				yielded = true
				runtime.Gosched()
				continue
			}
			c.handling = false
			c.hmu.Unlock()
			return
		}
		failed := c.herr != nil
		c.hmu.Unlock()
		yielded = false
		f := <-c.frames
		if failed {
			continue
		}
		if err := c.handle(c.work, f); err != nil {
			if errors.Is(err, errViolation) {
				c.log.Debug("closing connection", "reason", err)
			}
			c.hmu.Lock()
			c.herr = err
			c.hmu.Unlock()
			c.cancelRead()
		}
	}
}

// handle dispatches one frame to its handler. Unknown frame types are
// skipped; a malformed frame, or one only a relay may send, ends the
// connection with an Error frame and an error.
func (c *conn) handle(ctx context.Context, f wire.Frame) error {
	m, err := wire.Decode(f)
	if errors.Is(err, wire.ErrUnknownType) {
		c.log.Debug("skipping unknown frame", "type", f.Type.String(), "len", len(f.Payload))
		return nil
	}
	if err != nil {
		return c.violation(ctx, fmt.Errorf("%w: %v", errViolation, err))
	}
	switch m := m.(type) {
	case wire.Ping:
		return c.handlePing(ctx, m)
	case wire.Pong:
		return nil
	case wire.Send:
		return c.handleSend(ctx, m)
	case wire.Subscribe:
		return c.handleSubscribe(ctx, m)
	case wire.Ack:
		return c.handleAck(ctx, m)
	case wire.SetToken:
		return c.handleSetToken(ctx, m)
	case wire.AddToken:
		return c.handleAddToken(ctx, m)
	case wire.RemoveToken:
		return c.handleRemoveToken(ctx, m)
	case wire.GetPrekeyCount:
		return c.handleGetPrekeyCount(ctx, m)
	case wire.PutPrekeys:
		return c.handlePutPrekeys(ctx, m)
	case wire.GetBundle:
		return c.handleGetBundle(ctx, m)
	case wire.PutRanking:
		return c.handlePutRanking(ctx, m)
	case wire.GetRanking:
		return c.handleGetRanking(ctx, m)
	case wire.BlobCreate:
		return c.handleBlobCreate(ctx, m)
	case wire.BlobStatus:
		return c.handleBlobStatus(ctx, m)
	case wire.BlobPut:
		return c.handleBlobPut(ctx, m)
	case wire.BlobGet:
		return c.handleBlobGet(ctx, m)
	case wire.Fanout:
		return c.handleFanout(ctx, m)
	}
	return c.violation(ctx, fmt.Errorf("%w: %v frames are sent by relays, not clients", errViolation, f.Type))
}

// violation tells the client why the connection ends, then returns err.
func (c *conn) violation(ctx context.Context, err error) error {
	c.reply(ctx, wire.Error{Code: wire.CodeBadRequest, Msg: truncate(err.Error())})
	return err
}

func truncate(s string) string {
	if len(s) > wire.MaxMsg {
		return s[:wire.MaxMsg]
	}
	return s
}

// reply sends one message to the client.
func (c *conn) reply(ctx context.Context, m wire.Message) error {
	f, err := wire.NewFrame(m)
	if err != nil {
		return fmt.Errorf("marshal %v: %w", m.Type(), err)
	}
	if err := c.ch.Send(ctx, f); err != nil {
		return fmt.Errorf("send %v: %w", m.Type(), err)
	}
	return nil
}

// allow charges one request to the connection's key and address buckets.
func (c *conn) allow() bool {
	return c.s.keyLimit.allow(c.keyID) && c.s.addrLimit.allow(c.addr)
}

// checkToken reports whether token is mb's delivery token. An unknown
// mailbox and a wrong token look the same to the caller.
func (c *conn) checkToken(ctx context.Context, mb [16]byte, token [32]byte) (bool, error) {
	return c.s.store.HasToken(ctx, mb, sha256.Sum256(token[:]))
}

func (c *conn) handlePing(ctx context.Context, m wire.Ping) error {
	return c.reply(ctx, wire.Pong(m))
}

// handleSend checks a Send and starts storing its envelope; the
// connection's send pipeline (sendpipe.go) answers it, in order, once the
// envelope is durable, and pushes it to the mailbox's subscribers.
func (c *conn) handleSend(ctx context.Context, m wire.Send) error {
	size := len(m.Envelope)
	if err := c.pipe.acquire(ctx, size, c.s); err != nil {
		return err
	}
	p := pendingSend{size: size, id: m.ID, to: m.To}
	fail := func(result string, code wire.Code, msg string) error {
		p.result, p.code, p.msg = result, code, msg
		c.pipe.push(c, p)
		return nil
	}
	if len(m.Envelope) > wire.MaxEnvelope {
		return fail("too_large", wire.CodeTooLarge, "envelope over the size limit")
	}
	if !c.allow() {
		return fail("rate_limited", wire.CodeRateLimited, "too many requests")
	}
	if !c.s.disk.take(int64(size), func() bool { return c.holdsLittle(ctx, m.To) }) {
		return fail("disk_full", wire.CodeUnavailable, msgDiskFull)
	}
	ok, err := c.checkToken(ctx, m.To, m.Token)
	if err != nil {
		if ctx.Err() != nil {
			c.pipe.release(size, c.s)
			return ctx.Err()
		}
		c.log.Error("check token", "err", err)
		return fail("error", wire.CodeUnavailable, "storage unavailable")
	}
	if !ok {
		return fail("denied", wire.CodeDenied, "unknown mailbox or wrong delivery token")
	}
	// The relay keeps the time an envelope came to the minute only
	// (docs/protocol.md 6.10).
	p.env = Envelope{ID: m.ID, Received: c.s.now().Truncate(time.Minute), Data: m.Envelope}
	q := Quota{MaxCount: c.s.limits.MailboxCount, MaxBytes: c.s.limits.MailboxBytes}
	p.wait, p.ready = c.s.store.PutAsyncPoll(ctx, m.To, p.env, q)
	c.pipe.push(c, p)
	return nil
}

// storeFailed logs a store failure and answers with answer, unless the
// failure is the connection's own cancellation, which ends it.
func (c *conn) storeFailed(ctx context.Context, what string, err error, answer func() error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	c.log.Error(what, "err", err)
	return answer()
}

// handleSubscribe makes this connection receive its mailbox's envelopes:
// every pending one now, then the OK answering the Subscribe (so the
// client knows the backlog is done), and each new one as it is stored. A
// second Subscribe re-sends everything pending, then its own OK.
func (c *conn) handleSubscribe(ctx context.Context, m wire.Subscribe) error {
	if !c.s.subscribeLimit.allow(c.keyID) {
		if err := c.overRate(); err != nil {
			return err
		}
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeRateLimited, Msg: "too many subscriptions"})
	}
	c.refused = 0
	c.touch(ctx)
	if c.sub == nil {
		c.subscribed.Store(true)
		c.sub = newSubscriber(c, ctx)
		c.s.metrics.subscribers.Inc()
		c.s.hub.add(c.sub)
	}
	if !c.sub.subscribe(m.ReqID) {
		// The client is not reading the answers to its earlier
		// Subscribes: answer this one now, which waits until it reads.
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeRateLimited, Msg: "earlier subscriptions not yet answered"})
	}
	return nil
}

// handleAck deletes delivered envelopes from the connection's own mailbox.
// Acks are not answered. An Ack over the key's or address's rate is
// ignored: its envelopes stay pending and are delivered again.
func (c *conn) handleAck(ctx context.Context, m wire.Ack) error {
	cost := float64((len(m.Seqs) + ackUnit - 1) / ackUnit)
	if !c.s.ackLimit.allowN(c.keyID, cost) || !c.s.ackAddrLimit.allowN(c.addr, cost) {
		c.s.metrics.acksDropped.Inc()
		return c.overRate()
	}
	c.refused = 0
	seqs := c.acks.take(m.Seqs)
	if len(seqs) == 0 {
		return nil
	}
	if _, err := c.s.store.Ack(ctx, c.mailbox, seqs); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The envelopes stay and are delivered again later: at least once.
		c.log.Error("acknowledge envelopes", "err", err)
	}
	return nil
}

// msgDiskFull is the answer to a write refused by the disk budget.
const msgDiskFull = "relay storage is full; try again later"

// owner runs the checks every owner request that adds to the store
// shares: the rate limit and the disk budget. It answers the request
// itself (an Error) and returns false if one fails.
func (c *conn) owner(ctx context.Context, reqID uint32) (bool, error) {
	if !c.allow() {
		return false, c.reply(ctx, wire.Error{ReqID: reqID, Code: wire.CodeRateLimited, Msg: "too many requests"})
	}
	if c.s.disk.low() {
		return false, c.reply(ctx, wire.Error{ReqID: reqID, Code: wire.CodeUnavailable, Msg: msgDiskFull})
	}
	return true, nil
}

// holdsLittle reports whether mailbox mb holds less than
// ReserveMailboxBytes pending, so that a Send to it may draw on the disk
// reserve. A failed read counts as not little.
func (c *conn) holdsLittle(ctx context.Context, mb [16]byte) bool {
	u, err := c.s.store.Usage(ctx, mb)
	return err == nil && u.Bytes < ReserveMailboxBytes
}

// touch records that the owner of the connection's mailbox is active, at
// most once a day per mailbox (the store keeps the day only). A failure
// is logged: the mailbox is then merely older than it should be.
func (c *conn) touch(ctx context.Context) {
	now := c.s.now()
	if !c.s.touched.first(c.mailbox, now.Unix()/86400) {
		return
	}
	if err := c.s.store.Touch(ctx, c.mailbox, now); err != nil {
		c.s.touched.forget(c.mailbox)
		if ctx.Err() == nil {
			c.log.Warn("record mailbox activity", "err", err)
		}
	}
}

// tokenWrite answers an owner's token request once its store write
// returned err.
func (c *conn) tokenWrite(ctx context.Context, reqID uint32, what string, err error) error {
	switch {
	case errors.Is(err, ErrQuota):
		return c.reply(ctx, wire.Error{ReqID: reqID, Code: wire.CodeQuota,
			Msg: fmt.Sprintf("at most %d delivery tokens per mailbox", c.s.limits.Tokens)})
	case err != nil:
		return c.storeFailed(ctx, what, err, func() error {
			return c.reply(ctx, wire.Error{ReqID: reqID, Code: wire.CodeUnavailable, Msg: "storage unavailable"})
		})
	}
	c.touch(ctx)
	return c.reply(ctx, wire.OK{ReqID: reqID})
}

// handleSetToken registers the delivery token of the connection's mailbox,
// replacing every other, and creates the mailbox. Only SHA-256 of the
// token is stored.
func (c *conn) handleSetToken(ctx context.Context, m wire.SetToken) error {
	if ok, err := c.owner(ctx, m.ReqID); !ok {
		return err
	}
	if m.Token == ([32]byte{}) {
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeBadRequest, Msg: "the all-zero token is not allowed"})
	}
	return c.tokenWrite(ctx, m.ReqID, "set token", c.s.store.SetToken(ctx, c.mailbox, sha256.Sum256(m.Token[:])))
}

// handleAddToken adds a delivery token to the connection's mailbox,
// creating it.
func (c *conn) handleAddToken(ctx context.Context, m wire.AddToken) error {
	if ok, err := c.owner(ctx, m.ReqID); !ok {
		return err
	}
	if m.Token == ([32]byte{}) {
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeBadRequest, Msg: "the all-zero token is not allowed"})
	}
	return c.tokenWrite(ctx, m.ReqID, "add token", c.s.store.AddToken(ctx, c.mailbox, sha256.Sum256(m.Token[:]), c.s.limits.Tokens))
}

// handleRemoveToken revokes one delivery token of the connection's
// mailbox at once.
func (c *conn) handleRemoveToken(ctx context.Context, m wire.RemoveToken) error {
	if !c.allow() {
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeRateLimited, Msg: "too many requests"})
	}
	return c.tokenWrite(ctx, m.ReqID, "remove token", c.s.store.RemoveToken(ctx, c.mailbox, sha256.Sum256(m.Token[:])))
}

// handlePutPrekeys adds to the connection's own prekey directory entry.
func (c *conn) handlePutPrekeys(ctx context.Context, m wire.PutPrekeys) error {
	if ok, err := c.owner(ctx, m.ReqID); !ok {
		return err
	}
	up := PrekeyUpload{Signed: m.Signed, LastResort: m.LastResort}
	for _, p := range m.OneTime {
		up.OneTime = append(up.OneTime, Prekey{ID: p.ID, Data: p.Data})
	}
	for _, p := range m.KEM {
		up.KEM = append(up.KEM, Prekey{ID: p.ID, Data: p.Data})
	}
	err := c.s.store.PutPrekeys(ctx, c.mailbox, up, c.s.limits.Prekeys)
	switch {
	case errors.Is(err, ErrQuota):
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeQuota,
			Msg: fmt.Sprintf("at most %d prekeys of each kind", c.s.limits.Prekeys)})
	case err != nil:
		return c.storeFailed(ctx, "store prekeys", err, func() error {
			return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeUnavailable, Msg: "storage unavailable"})
		})
	}
	c.touch(ctx)
	return c.reply(ctx, wire.OK{ReqID: m.ReqID})
}

// handleGetPrekeyCount tells the owner how many one-time prekeys are left,
// so that its client uploads more before they run out, or, with NotFound,
// that its mailbox has no signed prekey record (it never registered, or
// the mailbox was deleted or lost), so that its client registers again.
func (c *conn) handleGetPrekeyCount(ctx context.Context, m wire.GetPrekeyCount) error {
	if !c.allow() {
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeRateLimited, Msg: "too many requests"})
	}
	_, err := c.s.store.Bundle(ctx, c.mailbox)
	if errors.Is(err, ErrNotFound) {
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeNotFound, Msg: "this mailbox is not registered; register it again"})
	}
	var oneTime, kem int
	if err == nil {
		oneTime, kem, err = c.s.store.PrekeyCounts(ctx, c.mailbox)
	}
	if err != nil {
		return c.storeFailed(ctx, "count prekeys", err, func() error {
			return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeUnavailable, Msg: "storage unavailable"})
		})
	}
	c.touch(ctx)
	return c.reply(ctx, wire.PrekeyCount{ReqID: m.ReqID, OneTime: uint32(oneTime), KEM: uint32(kem)})
}

// handleGetBundle hands out a prekey bundle of a mailbox whose token the
// requester holds, consuming one one-time prekey of each kind.
func (c *conn) handleGetBundle(ctx context.Context, m wire.GetBundle) error {
	fail := func(result string, code wire.Code, msg string) error {
		c.s.metrics.bundles.WithLabelValues(result).Inc()
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: code, Msg: msg})
	}
	if !c.allow() {
		return fail("rate_limited", wire.CodeRateLimited, "too many requests")
	}
	ok, err := c.checkToken(ctx, m.Mailbox, m.Token)
	if err != nil {
		return c.storeFailed(ctx, "check token", err, func() error {
			return fail("error", wire.CodeUnavailable, "storage unavailable")
		})
	}
	if !ok {
		return fail("denied", wire.CodeDenied, "unknown mailbox or wrong delivery token")
	}
	// Past the mailbox's one-time rate, hand out only what is never
	// consumed: strangers holding an old invite cannot drain the pools.
	pop, result := c.s.store.PopBundle, "ok"
	if !c.s.bundleLimit.allow(string(m.Mailbox[:])) {
		pop, result = c.s.store.Bundle, "last_resort"
	}
	b, err := pop(ctx, m.Mailbox)
	switch {
	case errors.Is(err, ErrNotFound):
		return fail("not_found", wire.CodeNotFound, "no prekeys uploaded for this mailbox")
	case err != nil:
		return c.storeFailed(ctx, "pop bundle", err, func() error {
			return fail("error", wire.CodeUnavailable, "storage unavailable")
		})
	}
	c.s.metrics.bundles.WithLabelValues(result).Inc()
	out := wire.Bundle{ReqID: m.ReqID, Signed: b.Signed, KEMLastResort: b.KEMLastResort}
	if b.HasOneTime {
		out.OneTimeID, out.OneTime = b.OneTime.ID, b.OneTime.Data
	}
	if b.HasKEM {
		out.KEMID, out.KEM = b.KEM.ID, b.KEM.Data
	}
	return c.reply(ctx, out)
}
