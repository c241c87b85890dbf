package relay

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/wire"
)

// conn is one authenticated client connection.
type conn struct {
	s       *Server
	ch      *channel.Conn
	id      uint64
	log     *slog.Logger
	addr    string   // rate-limit key of the source address
	keyID   string   // rate-limit key of the client's static key
	mailbox [16]byte // the mailbox the client's key owns

	sub        *subscriber    // set by the first Subscribe; read loop only
	deliveries sync.WaitGroup // the subscriber's push goroutine
	pipe       sendPipe       // Sends in flight
	work       context.Context
}

// ackUnit is how many acknowledged seqs cost one token of Limits.AckRate.
const ackUnit = 64

// errViolation marks a frame that ends the connection.
var errViolation = errors.New("protocol violation")

// errIdle ends a connection that has been silent for Limits.IdleTimeout.
var errIdle = errors.New("connection idle")

// serve reads and handles frames until the connection ends, then cleans
// up: on Shutdown the Sends in flight are answered before the channel
// closes; otherwise the channel closes first (the peer hung up or
// misbehaved) and they are only collected.
func (c *conn) serve(ctx context.Context) error {
	// Handlers run on work (ended by the caller's ctx or Close) so that
	// Shutdown lets the frames in hand finish; reads stop on read (also
	// ended by Shutdown).
	work, cancelWork := context.WithCancel(ctx)
	defer cancelWork()
	defer context.AfterFunc(c.s.workCtx, cancelWork)()
	read, cancelRead := context.WithCancel(work)
	defer cancelRead()
	defer context.AfterFunc(c.s.readCtx, cancelRead)()
	c.work = work

	graceful, err := c.readLoop(read, work)
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

// readLoop handles frames until the connection ends. graceful reports a
// Shutdown (a clean hang-up returns a nil error too, not graceful).
func (c *conn) readLoop(read, work context.Context) (graceful bool, err error) {
	read, cancelRead := context.WithCancel(read)
	defer cancelRead()
	var idle atomic.Bool
	timeout := c.s.limits.IdleTimeout
	// The timer is not reset per frame (that costs more than the frame's
	// handling): each frame records when it came, and the timer, when it
	// fires, waits again for what is left of the timeout since the last.
	start := time.Now()
	var lastFrame atomic.Int64 // time.Since(start) at the last frame
	var timer *time.Timer
	if timeout > 0 {
		var mu sync.Mutex // orders the timer's re-arming with its creation and Stop
		stopped := false
		mu.Lock()
		timer = time.AfterFunc(timeout, func() {
			mu.Lock()
			defer mu.Unlock()
			if stopped {
				return
			}
			if left := timeout - (time.Since(start) - time.Duration(lastFrame.Load())); left > 0 {
				timer.Reset(left)
				return
			}
			idle.Store(true)
			cancelRead()
		})
		mu.Unlock()
		defer func() {
			mu.Lock()
			stopped = true
			timer.Stop()
			mu.Unlock()
		}()
	}
	for {
		f, err := c.ch.Recv(read)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				return false, nil
			case read.Err() != nil && c.s.readCtx.Err() != nil:
				return true, nil // shutdown
			case idle.Load():
				return false, fmt.Errorf("no frame for %v: %w", timeout, errIdle)
			case read.Err() != nil:
				return false, read.Err()
			}
			return false, fmt.Errorf("read frame: %w", err)
		}
		if timer != nil {
			lastFrame.Store(int64(time.Since(start)))
		}
		c.s.metrics.frame(f.Type)
		if err := c.handle(work, f); err != nil {
			if errors.Is(err, errViolation) {
				c.log.Debug("closing connection", "reason", err)
			}
			return false, err
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
	case wire.PutPrekeys:
		return c.handlePutPrekeys(ctx, m)
	case wire.GetBundle:
		return c.handleGetBundle(ctx, m)
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
	if err := c.pipe.acquire(ctx, size); err != nil {
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
	ok, err := c.checkToken(ctx, m.To, m.Token)
	if err != nil {
		if ctx.Err() != nil {
			c.pipe.release(size)
			return ctx.Err()
		}
		c.log.Error("check token", "err", err)
		return fail("error", wire.CodeUnavailable, "storage unavailable")
	}
	if !ok {
		return fail("denied", wire.CodeDenied, "unknown mailbox or wrong delivery token")
	}
	p.env = Envelope{ID: m.ID, Received: c.s.now(), Data: m.Envelope}
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
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeRateLimited, Msg: "too many subscriptions"})
	}
	if c.sub == nil {
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
	if !c.s.ackLimit.allowN(c.keyID, cost) || !c.s.addrLimit.allowN(c.addr, cost) {
		c.s.metrics.acksDropped.Inc()
		return nil
	}
	if _, err := c.s.store.Ack(ctx, c.mailbox, m.Seqs); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The envelopes stay and are delivered again later: at least once.
		c.log.Error("acknowledge envelopes", "err", err)
	}
	return nil
}

// handleSetToken registers the delivery token of the connection's mailbox,
// creating the mailbox. Only SHA-256 of the token is stored.
func (c *conn) handleSetToken(ctx context.Context, m wire.SetToken) error {
	if !c.allow() {
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeRateLimited, Msg: "too many requests"})
	}
	if m.Token == ([32]byte{}) {
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeBadRequest, Msg: "the all-zero token is not allowed"})
	}
	if err := c.s.store.SetToken(ctx, c.mailbox, sha256.Sum256(m.Token[:])); err != nil {
		return c.storeFailed(ctx, "set token", err, func() error {
			return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeUnavailable, Msg: "storage unavailable"})
		})
	}
	return c.reply(ctx, wire.OK{ReqID: m.ReqID})
}

// handlePutPrekeys adds to the connection's own prekey directory entry.
func (c *conn) handlePutPrekeys(ctx context.Context, m wire.PutPrekeys) error {
	if !c.allow() {
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeRateLimited, Msg: "too many requests"})
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
	return c.reply(ctx, wire.OK{ReqID: m.ReqID})
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
	b, err := c.s.store.PopBundle(ctx, m.Mailbox)
	switch {
	case errors.Is(err, ErrNotFound):
		return fail("not_found", wire.CodeNotFound, "no prekeys uploaded for this mailbox")
	case err != nil:
		return c.storeFailed(ctx, "pop bundle", err, func() error {
			return fail("error", wire.CodeUnavailable, "storage unavailable")
		})
	}
	c.s.metrics.bundles.WithLabelValues("ok").Inc()
	out := wire.Bundle{ReqID: m.ReqID, Signed: b.Signed, KEMLastResort: b.KEMLastResort}
	if b.HasOneTime {
		out.OneTimeID, out.OneTime = b.OneTime.ID, b.OneTime.Data
	}
	if b.HasKEM {
		out.KEMID, out.KEM = b.KEM.ID, b.KEM.Data
	}
	return c.reply(ctx, out)
}
