package relay_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/wire"
)

func ipAddr(s string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(s), Port: 1} }

// stalledHandshake opens a connection from addr that never sends a byte
// and returns the client's end.
func (e *env) stalledHandshake(addr net.Addr) net.Conn {
	a, b := net.Pipe()
	go e.srv.ServeConn(context.Background(), addrConn{Conn: b, remote: addr})
	e.t.Cleanup(func() { a.Close() })
	return a
}

// wasClosed reports whether the relay closed the client end c within d.
func wasClosed(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe)
}

// TestHandshakesShedFirst fills the handshake budget with connections
// that never handshake and checks that honest clients still get in, also
// from the attacker's own address (a shared NAT): the oldest stalled
// handshake is shed for each.
func TestHandshakesShedFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) {
		c.Budgets = relay.Budgets{Conns: 4, Handshakes: 2}
		c.Limits.HandshakeRate = -1
	})
	attacker := ipAddr("198.51.100.1")
	first := e.stalledHandshake(attacker)
	time.Sleep(10 * time.Millisecond) // order the two stalled handshakes
	second := e.stalledHandshake(attacker)
	for e.metric("ferry_relay_budget_used", "handshakes") < 2 {
		time.Sleep(time.Millisecond)
	}
	// A newcomer now is refused: both handshakes are too young to shed.
	if _, err := e.tryDial(mustKey(t), attacker); err == nil {
		t.Fatal("a newcomer shed a handshake younger than half a second")
	}
	time.Sleep(600 * time.Millisecond)
	honest := e.dial(mustKey(t), attacker)
	if !wasClosed(first, 2*time.Second) {
		t.Fatal("the oldest stalled handshake was not shed for an honest newcomer")
	}
	if wasClosed(second, 50*time.Millisecond) {
		t.Fatal("the second stalled handshake was shed too")
	}
	honest.quiet()
}

// TestIdleConnectionsShed fills the connection budget with authenticated
// connections and checks which one a newcomer displaces: an idle one that
// has not subscribed, and none while all are active.
func TestIdleConnectionsShed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		active time.Duration
		shed   bool
	}{
		{"idle", -1, true},
		{"all active", time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(c *relay.Config) {
				c.Budgets = relay.Budgets{Conns: 3, ActiveWindow: tc.active}
				c.Limits.HandshakeRate = -1
			})
			subscribed := e.dial(mustKey(t), ipAddr("203.0.113.1"))
			subscribed.register(token(1))
			subscribed.subscribe()
			older := e.dial(mustKey(t), ipAddr("203.0.113.2"))
			older.quiet()
			newer := e.dial(mustKey(t), ipAddr("203.0.113.3"))
			newer.quiet()
			c, err := e.tryDial(mustKey(t), ipAddr("203.0.113.4"))
			if !tc.shed {
				if err == nil {
					t.Fatal("a newcomer got in although every connection was active")
				}
				subscribed.quiet()
				older.quiet()
				newer.quiet()
				return
			}
			if err != nil {
				t.Fatalf("newcomer: %v", err)
			}
			c.quiet()
			if err := older.closed(); err == nil {
				t.Fatal("the shed connection's ServeConn returned nil")
			}
			subscribed.quiet()
			newer.quiet()
		})
	}
}

// TestStalledFrameClosedDespitePings starts a frame that arrives far more
// slowly than FrameTimeout allows while the client keeps pinging: the
// relay must close the connection, which the idle timeout alone never did
// (pings kept a stalled frame's memory alive).
func TestStalledFrameClosedDespitePings(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) {
		c.Limits.FrameTimeout = 300 * time.Millisecond
		c.Limits.IdleTimeout = time.Minute
	})
	slow := func(c net.Conn) net.Conn { return slowReader{Conn: c} }
	c, err := e.dialVia(mustKey(t), nil, slow)
	if err != nil {
		t.Fatal(err)
	}
	go c.ch.Send(context.Background(), mustFrame(wire.Send{ID: id(1), To: [16]byte{1}, Token: token(1), Envelope: make([]byte, wire.MaxEnvelope)}))
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
				c.ch.Send(context.Background(), mustFrame(wire.Ping{Nonce: 1}))
			}
		}
	}()
	select {
	case err := <-c.served:
		c.served <- err
		if err == nil || !strings.Contains(err.Error(), "idle") {
			t.Fatalf("ServeConn = %v, want the idle error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a frame stalled for 5s (FrameTimeout 300ms) while pings came: the connection stayed open")
	}
}

// slowReader hands the relay at most 256 bytes per 10 ms: a 256 KiB frame
// takes about 10 s.
type slowReader struct{ net.Conn }

func (c slowReader) Read(p []byte) (int, error) {
	time.Sleep(10 * time.Millisecond)
	return c.Conn.Read(p[:min(len(p), 256)])
}

// TestQueueBudgetFallsBackToStore runs push with a relay-wide queue budget
// too small for any envelope: every envelope must still arrive, read from
// the store instead of the queue.
func TestQueueBudgetFallsBackToStore(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) { c.Budgets.QueueMemory = 1; c.Budgets.SendMemory = 1 })
	bob := e.dial(mustKey(t), nil)
	bob.register(token(5))
	bob.subscribe()
	anon := e.dial(mustKey(t), nil)
	for i := range 20 {
		mustSendOK(t, anon.sendTo(bob.mailbox, token(5), id(i), []byte("envelope")))
	}
	got := map[[16]byte]bool{}
	for len(got) < 20 {
		got[expect[wire.Deliver](bob).ID] = true
	}
}
