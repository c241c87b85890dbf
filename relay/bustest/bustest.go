// Package bustest is the conformance suite for relay.Bus: every
// implementation runs it from its own tests, so the contracts written on
// relay.Bus hold for all of them.
//
// It is test support, not a bus; production code never imports it.
package bustest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
)

// Config says how to get buses for the suite.
type Config struct {
	// Pair returns two relays' buses on one network of their own, so that
	// tests running in parallel do not see each other. The suite closes
	// them.
	Pair func(t *testing.T) (a, b relay.Bus)
}

// Run runs every conformance test against the buses c makes.
func Run(t *testing.T, c Config) {
	tests := []struct {
		name string
		fn   func(t *testing.T, c Config)
	}{
		{"Deliver", testDeliver},
		{"WatchIsImmediate", testWatchIsImmediate},
		{"OnlyWatched", testOnlyWatched},
		{"Unwatch", testUnwatch},
		{"NoEcho", testNoEcho},
		{"Order", testOrder},
		{"LargeEnvelope", testLarge},
		{"AfterClose", testAfterClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, c)
		})
	}
}

// note is one announcement as Listen delivered it.
type note struct {
	mb  [16]byte
	env relay.Envelope
}

// listener runs b's Listen and collects what it delivers.
type listener struct {
	notes  chan note
	states chan bool
	done   chan error
}

// listen starts Listen on b until the test ends, and waits until the bus
// says it is up.
func listen(t *testing.T, b relay.Bus) *listener {
	t.Helper()
	l := &listener{notes: make(chan note, 1024), states: make(chan bool, 64), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		l.done <- b.Listen(ctx,
			func(mb [16]byte, env relay.Envelope) { l.notes <- note{mb, env} },
			func(up bool) { l.states <- up })
	}()
	t.Cleanup(func() {
		cancel()
		<-l.done
	})
	for deadline := time.After(10 * time.Second); ; {
		select {
		case up := <-l.states:
			if up {
				return l
			}
		case <-deadline:
			t.Fatal("the bus did not come up within 10s")
		}
	}
}

// next returns the next announcement, failing after 10 seconds.
func (l *listener) next(t *testing.T) note {
	t.Helper()
	select {
	case n := <-l.notes:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no announcement within 10s")
		return note{}
	}
}

func pair(t *testing.T, c Config) (a, b relay.Bus) {
	t.Helper()
	a, b = c.Pair(t)
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b
}

func mailbox(n byte) [16]byte { return [16]byte{'m', 15: n} }

func envelope(seq uint64, data string) relay.Envelope {
	return relay.Envelope{Seq: seq, ID: [16]byte{'i', byte(seq >> 8), byte(seq)}, Received: time.UnixMilli(1_700_000_000_000 + int64(seq)), Data: []byte(data)}
}

func publish(t *testing.T, b relay.Bus, mb [16]byte, env relay.Envelope) {
	t.Helper()
	if err := b.Publish(context.Background(), mb, env); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func watch(t *testing.T, b relay.Bus, mb [16]byte) {
	t.Helper()
	if err := b.Watch(mb); err != nil {
		t.Fatalf("Watch: %v", err)
	}
}

// settle gives a Watch time to reach a networked broker: it watches a
// marker mailbox and waits until an announcement to it comes through.
func settle(t *testing.T, from relay.Bus, to relay.Bus, l *listener, marker byte) {
	t.Helper()
	mb := mailbox(marker)
	watch(t, to, mb)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		publish(t, from, mb, envelope(0, "marker"))
		select {
		case n := <-l.notes:
			if n.mb == mb {
				drain(l, mb)
				return
			}
			t.Fatalf("got an announcement for %x while settling", n.mb)
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatal("a watch did not take effect within 10s")
}

// drain drops the marker announcements still on their way.
func drain(l *listener, marker [16]byte) {
	for {
		select {
		case n := <-l.notes:
			if n.mb != marker {
				l.notes <- n // not ours; cannot happen before the test publishes
				return
			}
		case <-time.After(200 * time.Millisecond):
			return
		}
	}
}

func same(a, b relay.Envelope) bool {
	return a.Seq == b.Seq && a.ID == b.ID && a.Received.Equal(b.Received) && bytes.Equal(a.Data, b.Data)
}

func testDeliver(t *testing.T, c Config) {
	a, b := pair(t, c)
	l := listen(t, b)
	watch(t, b, mailbox(1))
	settle(t, a, b, l, 200)
	env := envelope(7, "sealed bytes")
	publish(t, a, mailbox(1), env)
	n := l.next(t)
	if n.mb != mailbox(1) || !same(n.env, env) {
		t.Fatalf("delivered %x %+v, want %x %+v", n.mb, n.env, mailbox(1), env)
	}
}

func testOnlyWatched(t *testing.T, c Config) {
	a, b := pair(t, c)
	l := listen(t, b)
	watch(t, b, mailbox(1))
	settle(t, a, b, l, 200)
	publish(t, a, mailbox(2), envelope(1, "not watched"))
	publish(t, a, mailbox(1), envelope(2, "watched"))
	if n := l.next(t); n.mb != mailbox(1) || n.env.Seq != 2 {
		t.Fatalf("delivered %x seq %d, want only the watched mailbox's seq 2", n.mb, n.env.Seq)
	}
}

func testWatchIsImmediate(t *testing.T, c Config) {
	a, b := pair(t, c)
	l := listen(t, b)
	for i := range byte(20) {
		// No waiting between the Watch and the Publish.
		watch(t, b, mailbox(i))
		publish(t, a, mailbox(i), envelope(uint64(i)+1, "right after"))
		if n := l.next(t); n.mb != mailbox(i) {
			t.Fatalf("got an announcement for %x, want %x", n.mb, mailbox(i))
		}
	}
}

func testUnwatch(t *testing.T, c Config) {
	a, b := pair(t, c)
	l := listen(t, b)
	watch(t, b, mailbox(1))
	watch(t, b, mailbox(1)) // two subscribers: watched until both leave
	if err := b.Unwatch(mailbox(1)); err != nil {
		t.Fatalf("Unwatch: %v", err)
	}
	if err := b.Unwatch(mailbox(3)); err != nil {
		t.Fatalf("Unwatch of a mailbox not watched: %v", err)
	}
	settle(t, a, b, l, 200)
	publish(t, a, mailbox(1), envelope(1, "still watched"))
	if n := l.next(t); n.mb != mailbox(1) {
		t.Fatalf("delivered an announcement for %x, want mailbox 1, still watched once", n.mb)
	}
	if err := b.Unwatch(mailbox(1)); err != nil {
		t.Fatalf("Unwatch: %v", err)
	}
	publish(t, a, mailbox(1), envelope(2, "unwatched"))
	publish(t, a, mailbox(200), envelope(3, "marker"))
	for {
		n := l.next(t)
		if n.mb == mailbox(1) {
			t.Fatalf("delivered an announcement for mailbox 1 after its last Unwatch")
		}
		if n.env.Seq == 3 {
			break
		}
	}
}

func testNoEcho(t *testing.T, c Config) {
	a, b := pair(t, c)
	la := listen(t, a)
	lb := listen(t, b)
	watch(t, a, mailbox(1))
	watch(t, b, mailbox(1))
	settle(t, b, a, la, 200)
	settle(t, a, b, lb, 201)
	publish(t, a, mailbox(1), envelope(1, "from a"))
	if n := lb.next(t); n.env.Seq != 1 {
		t.Fatalf("b got seq %d, want 1", n.env.Seq)
	}
	publish(t, b, mailbox(1), envelope(2, "from b"))
	if n := la.next(t); n.env.Seq != 2 {
		t.Fatalf("a got seq %d (its own announcement?), want b's seq 2", n.env.Seq)
	}
}

func testOrder(t *testing.T, c Config) {
	a, b := pair(t, c)
	l := listen(t, b)
	watch(t, b, mailbox(1))
	watch(t, b, mailbox(2))
	settle(t, a, b, l, 200)
	const n = 500
	for i := range uint64(n) {
		publish(t, a, mailbox(byte(1+i%2)), envelope(i+1, fmt.Sprint(i)))
	}
	for i := range uint64(n) {
		if got := l.next(t); got.env.Seq != i+1 {
			t.Fatalf("announcement %d has seq %d: out of the order published", i, got.env.Seq)
		}
	}
}

func testLarge(t *testing.T, c Config) {
	a, b := pair(t, c)
	l := listen(t, b)
	watch(t, b, mailbox(1))
	settle(t, a, b, l, 200)
	env := envelope(1, "")
	env.Data = bytes.Repeat([]byte{0xa5, 0x5a, 0}, 256<<10/3)
	publish(t, a, mailbox(1), env)
	if n := l.next(t); !same(n.env, env) {
		t.Fatalf("a %d-byte envelope arrived as %d bytes", len(env.Data), len(n.env.Data))
	}
}

func testAfterClose(t *testing.T, c Config) {
	a, b := pair(t, c)
	done := make(chan error, 1)
	go func() {
		done <- b.Listen(context.Background(), func([16]byte, relay.Envelope) {}, func(bool) {})
	}()
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Listen did not return after Close")
	}
	for name, err := range map[string]error{
		"Publish": b.Publish(context.Background(), mailbox(1), envelope(1, "x")),
		"Watch":   b.Watch(mailbox(1)),
		"Unwatch": b.Unwatch(mailbox(1)),
	} {
		if !errors.Is(err, relay.ErrClosed) {
			t.Errorf("%s after Close: got %v, want ErrClosed", name, err)
		}
	}
	_ = a
}
