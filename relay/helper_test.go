package relay_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/wire"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a relay under test with an in-memory store.
type env struct {
	t     *testing.T
	srv   *relay.Server
	store relay.Store
	key   channel.KeyPair
	clock *fakeClock
}

// newEnv starts a relay; edit changes its Config before it starts.
func newEnv(t *testing.T, edit func(*relay.Config)) *env {
	t.Helper()
	key := mustKey(t)
	e := &env{t: t, key: key, clock: newFakeClock()}
	ms := memstore.New()
	ms.Now = e.clock.Now
	e.store = ms
	cfg := relay.Config{Key: key, Store: e.store, Now: e.clock.Now}
	if edit != nil {
		edit(&cfg)
	}
	if cfg.Store != e.store {
		e.store = cfg.Store
	}
	e.key = cfg.Key
	srv, err := relay.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		e.store.Close()
	})
	return e
}

func mustKey(t testing.TB) channel.KeyPair {
	t.Helper()
	k, err := channel.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// addrConn gives a net.Pipe end a chosen remote address.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// client is a test client: a channel to the relay and a goroutine that
// decodes every frame the relay sends into msgs.
type client struct {
	t       *testing.T
	key     channel.KeyPair
	mailbox [16]byte
	ch      *channel.Conn
	msgs    chan wire.Message
	served  chan error // ServeConn's result
	readErr chan error // the reader's final error
}

// dial connects a client with key from remote address addr (nil: a pipe).
func (e *env) dial(key channel.KeyPair, addr net.Addr) *client {
	e.t.Helper()
	c, err := e.tryDial(key, addr)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	return c
}

func (e *env) tryDial(key channel.KeyPair, addr net.Addr) (*client, error) {
	return e.dialVia(key, addr, nil)
}

// dialVia is tryDial with the relay's end of the pipe wrapped by wrap (if
// not nil).
func (e *env) dialVia(key channel.KeyPair, addr net.Addr, wrap func(net.Conn) net.Conn) (*client, error) {
	a, b := net.Pipe()
	var srvSide net.Conn = b
	if addr != nil {
		srvSide = addrConn{Conn: b, remote: addr}
	}
	if wrap != nil {
		srvSide = wrap(srvSide)
	}
	served := make(chan error, 1)
	go func() { served <- e.srv.ServeConn(context.Background(), srvSide) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := channel.Client(ctx, a, key, e.key.Public)
	if err != nil {
		<-served
		return nil, err
	}
	c := &client{
		t: e.t, key: key, mailbox: channel.MailboxID(key.Public), ch: ch,
		msgs: make(chan wire.Message, 4096), served: served, readErr: make(chan error, 1),
	}
	go func() {
		for {
			f, err := ch.Recv(context.Background())
			if err != nil {
				c.readErr <- err
				close(c.msgs)
				return
			}
			m, err := wire.Decode(f)
			if err != nil {
				c.readErr <- fmt.Errorf("client decode: %w", err)
				close(c.msgs)
				return
			}
			c.msgs <- m
		}
	}()
	e.t.Cleanup(func() {
		ch.Close()
		<-served
	})
	return c, nil
}

func (c *client) send(m wire.Message) {
	c.t.Helper()
	f, err := wire.NewFrame(m)
	if err != nil {
		c.t.Fatalf("marshal %v: %v", m.Type(), err)
	}
	c.sendFrame(f)
}

func (c *client) sendFrame(f wire.Frame) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.ch.Send(ctx, f); err != nil {
		c.t.Fatalf("send %v: %v", f.Type, err)
	}
}

// next returns the next message from the relay.
func (c *client) next() wire.Message {
	c.t.Helper()
	return c.nextWithin(10 * time.Second)
}

// nextWithin is next, waiting up to d for the frame.
func (c *client) nextWithin(d time.Duration) wire.Message {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			c.t.Fatalf("connection ended while waiting for a frame: %v", <-c.readErr)
		}
		return m
	case <-time.After(d):
		c.t.Fatalf("no frame from the relay within %v", d)
	}
	return nil
}

// expect returns the next message, failing unless it is a T.
func expect[T wire.Message](c *client) T {
	c.t.Helper()
	m := c.next()
	v, ok := m.(T)
	if !ok {
		var want T
		c.t.Fatalf("got %T %+v, want %T", m, m, want)
	}
	return v
}

// quiet checks that the relay sends nothing more: it sends a Ping and
// expects the Pong as the very next frame.
func (c *client) quiet() {
	c.t.Helper()
	c.send(wire.Ping{Nonce: 4242})
	if p := expect[wire.Pong](c); p.Nonce != 4242 {
		c.t.Fatalf("Pong nonce %d, want 4242", p.Nonce)
	}
}

// drain sends a Ping and discards pushed envelopes until its Pong: the
// relay has handled every frame sent before.
func (c *client) drain() {
	c.t.Helper()
	c.send(wire.Ping{Nonce: 4343})
	for {
		switch m := c.next().(type) {
		case wire.Deliver:
		case wire.Pong:
			if m.Nonce == 4343 {
				return
			}
		default:
			c.t.Fatalf("got %T %+v while draining, want Deliver or Pong", m, m)
		}
	}
}

// closed waits for the relay to end the connection and returns ServeConn's
// result.
func (c *client) closed() error {
	c.t.Helper()
	select {
	case err := <-c.served:
		c.served <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		c.t.Fatal("relay did not end the connection within 10s")
	}
	return nil
}

// register makes c own a mailbox with token tok and subscribes it.
func (c *client) register(tok [32]byte) {
	c.t.Helper()
	c.send(wire.SetToken{ReqID: 1, Token: tok})
	if ok := expect[wire.OK](c); ok.ReqID != 1 {
		c.t.Fatalf("OK for request %d, want 1", ok.ReqID)
	}
}

// subscribe subscribes c and returns the envelopes pushed before the OK:
// the relay answers once everything pending has been pushed.
func (c *client) subscribe() []wire.Deliver {
	c.t.Helper()
	c.send(wire.Subscribe{ReqID: 2})
	var got []wire.Deliver
	for {
		switch m := c.next().(type) {
		case wire.Deliver:
			got = append(got, m)
		case wire.OK:
			if m.ReqID != 2 {
				c.t.Fatalf("OK for request %d, want 2", m.ReqID)
			}
			return got
		default:
			c.t.Fatalf("got %T %+v before the Subscribe's OK, want Deliver or OK", m, m)
		}
	}
}

// sendTo sends an envelope and returns the relay's answer (SendOK or
// SendErr).
func (c *client) sendTo(to [16]byte, tok [32]byte, id [16]byte, data []byte) wire.Message {
	c.t.Helper()
	c.send(wire.Send{ID: id, To: to, Token: tok, Envelope: data})
	m := c.next()
	switch m := m.(type) {
	case wire.SendOK:
		if m.ID != id {
			c.t.Fatalf("SendOK for %x, want %x", m.ID, id)
		}
	case wire.SendErr:
		if m.ID != id {
			c.t.Fatalf("SendErr for %x, want %x", m.ID, id)
		}
	default:
		c.t.Fatalf("answer to Send: got %T %+v", m, m)
	}
	return m
}

func mustSendOK(t *testing.T, m wire.Message) {
	t.Helper()
	if _, ok := m.(wire.SendOK); !ok {
		t.Fatalf("got %+v, want SendOK", m)
	}
}

func wantSendErr(t *testing.T, m wire.Message, code wire.Code) wire.SendErr {
	t.Helper()
	e, ok := m.(wire.SendErr)
	if !ok || e.Code != code {
		t.Fatalf("got %T %+v, want SendErr with code %v", m, m, code)
	}
	return e
}

func token(n byte) [32]byte { return sha256.Sum256([]byte{'t', n}) }
func id(n int) [16]byte     { return [16]byte{'m', byte(n >> 8), byte(n)} }

func equal(a, b any) bool { return reflect.DeepEqual(a, b) }
