package relay_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/wire"
)

// writeCounter counts the Writes of the relay's end of a connection and,
// once hold is armed, holds the next Write until release is closed.
type writeCounter struct {
	net.Conn
	mu      sync.Mutex
	writes  int
	hold    bool
	held    chan struct{} // closed when a Write is being held
	release chan struct{}
}

func (c *writeCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	hold := c.hold
	c.hold = false
	c.mu.Unlock()
	if hold {
		close(c.held)
		<-c.release
	}
	return c.Conn.Write(p)
}

// count returns the Writes so far.
func (c *writeCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// holdNext makes the next Write wait for the returned release channel to
// be closed; held is closed once it waits.
func (c *writeCounter) holdNext() (held, release chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold, c.held, c.release = true, make(chan struct{}), make(chan struct{})
	return c.held, c.release
}

// pollGateStore is a PollingPutter whose Puts all complete together when
// gate is closed; started counts the Puts started.
type pollGateStore struct {
	relay.Store
	gate    chan struct{}
	started chan struct{}
}

func (g pollGateStore) PutAsync(ctx context.Context, mb [16]byte, env relay.Envelope, q relay.Quota) func() (uint64, bool, error) {
	wait, _ := g.PutAsyncPoll(ctx, mb, env, q)
	return wait
}

func (g pollGateStore) PutAsyncPoll(ctx context.Context, mb [16]byte, env relay.Envelope, q relay.Quota) (func() (uint64, bool, error), func() bool) {
	env.Data = append([]byte(nil), env.Data...)
	g.started <- struct{}{}
	wait := func() (uint64, bool, error) {
		<-g.gate
		return g.Store.Put(ctx, mb, env, q)
	}
	ready := func() bool {
		select {
		case <-g.gate:
			return true
		default:
			return false
		}
	}
	return wait, ready
}

var _ relay.PollingPutter = pollGateStore{}

// TestAnswersAndPushesBatched pipelines n Sends whose Puts complete
// together, and checks that the relay answers them, and pushes them to the
// subscriber, in far fewer writes than n (one channel write per frame
// before batching), in order.
func TestAnswersAndPushesBatched(t *testing.T) {
	t.Parallel()
	const n = 40
	gs := pollGateStore{Store: memstore.New(), gate: make(chan struct{}), started: make(chan struct{}, n)}
	e := newEnv(t, func(c *relay.Config) { c.Store = gs })
	var bobW, anonW *writeCounter
	bob, err := e.dialVia(mustKey(t), nil, func(c net.Conn) net.Conn { bobW = &writeCounter{Conn: c}; return bobW })
	if err != nil {
		t.Fatal(err)
	}
	bob.register(token(60))
	bob.subscribe()
	anon, err := e.dialVia(mustKey(t), nil, func(c net.Conn) net.Conn { anonW = &writeCounter{Conn: c}; return anonW })
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		anon.send(wire.Send{ID: id(i), To: bob.mailbox, Token: token(60), Envelope: []byte{byte(i)}})
	}
	for range n {
		select {
		case <-gs.started:
		case <-time.After(10 * time.Second):
			t.Fatal("the relay did not start every Put")
		}
	}
	// Hold the first push in its Write, so the other envelopes queue up
	// behind it.
	held, release := bobW.holdNext()
	anonBefore, bobBefore := anonW.count(), bobW.count()
	close(gs.gate)
	for i := range n {
		if ok := expect[wire.SendOK](anon); ok.ID != id(i) {
			t.Fatalf("answer %d is for %x, want %x", i, ok.ID, id(i))
		}
	}
	if w := anonW.count() - anonBefore; w > 2 {
		t.Errorf("%d Sends completed together were answered in %d writes, want at most 2", n, w)
	}
	<-held
	close(release)
	for i := range n {
		if d := expect[wire.Deliver](bob); d.ID != id(i) {
			t.Fatalf("push %d is %x, want %x", i, d.ID, id(i))
		}
	}
	if w := bobW.count() - bobBefore; w > 3 {
		t.Errorf("%d envelopes were pushed in %d writes, want at most 3 (the held one, then the rest together)", n, w)
	}
}
