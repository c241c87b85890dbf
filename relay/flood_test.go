package relay_test

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/wire"
)

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestSubscribeFloodBounded sends Subscribes as fast as the relay reads
// them from a client that never reads its answers, and checks that the
// relay stops reading rather than remembering every Subscribe. Before the
// fix each Subscribe queued its OK in memory: 2 million of them took
// about 10 MiB, and an hour of them would exhaust the relay.
func TestSubscribeFloodBounded(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(mustKey(t), nil)
	c.register(token(1))
	anon := e.dial(mustKey(t), nil)
	for i := range 3 {
		mustSendOK(t, anon.sendTo(c.mailbox, token(1), id(i), []byte("waiting")))
	}
	// From now on c reads nothing: stop its reader from draining the pipe.
	frames := make([]wire.Frame, 64)
	for i := range frames {
		frames[i] = mustFrame(wire.Subscribe{ReqID: uint32(i + 10)})
	}
	before := liveHeap()
	block := make(chan struct{})
	defer close(block)
	go func() {
		// Keep c's reader busy so that nothing more is read from the pipe.
		for range c.msgs {
			<-block
		}
	}()
	// A write blocked in the pipe ends only when the conn closes, so the
	// flood runs in its own goroutine and the test watches its progress.
	var sent atomic.Int64
	go func() {
		for sent.Load() < 2_000_000 {
			if err := c.ch.SendBatch(context.Background(), frames); err != nil {
				return
			}
			sent.Add(int64(len(frames)))
		}
	}()
	deadline := time.Now().Add(3 * time.Second)
	for last := int64(-1); time.Now().Before(deadline) && sent.Load() < 2_000_000; {
		time.Sleep(100 * time.Millisecond)
		if n := sent.Load(); n == last {
			break // the relay stopped reading: what the fix wants
		} else {
			last = n
		}
	}
	grew := int64(liveHeap()) - int64(before)
	t.Logf("%d Subscribes read by the relay, live heap grew %d KiB", sent.Load(), grew>>10)
	if grew > 2<<20 {
		t.Errorf("live heap grew by %d KiB after %d unanswered Subscribes, want under 2 MiB", grew>>10, sent.Load())
	}
	c.ch.Close()
}

// ackCounter counts the Acks that reach the store.
type ackCounter struct {
	relay.Store
	acks atomic.Int64
}

func (s *ackCounter) Ack(ctx context.Context, mb [16]byte, seqs []uint64) (int, error) {
	s.acks.Add(1)
	return s.Store.Ack(ctx, mb, seqs)
}

// TestAckRateLimited floods the relay with Acks from one key and checks
// that only the key's burst reaches the store: every Ack is a write, and
// before the fix 32 connections acking as fast as they could raised an
// honest client's round trip from 53 to 300 ms.
func TestAckRateLimited(t *testing.T) {
	t.Parallel()
	store := &ackCounter{Store: memstore.New()}
	e := newEnv(t, func(c *relay.Config) { c.Store = store })
	c := e.dial(mustKey(t), nil)
	c.register(token(1))
	frames := make([]wire.Frame, 1050) // 50 over the burst: not yet a flood that closes the connection
	for i := range frames {
		frames[i] = mustFrame(wire.Ack{Seqs: []uint64{uint64(i + 1)}})
	}
	if err := c.ch.SendBatch(context.Background(), frames); err != nil {
		t.Fatal(err)
	}
	c.quiet()
	if got := store.acks.Load(); got != 1000 {
		t.Errorf("%d of 1050 Acks sent at once reached the store, want the burst of 1000", got)
	}
	// Once the bucket refills, Acks go through again.
	e.clock.Advance(time.Minute)
	before := store.acks.Load()
	c.send(wire.Ack{Seqs: []uint64{1}})
	c.quiet()
	if store.acks.Load() != before+1 {
		t.Error("an Ack after the bucket refilled did not reach the store")
	}
}

// TestSubscribeRateLimited checks that Subscribes beyond the key's burst
// are answered Error{RateLimited} and that the bucket refills.
func TestSubscribeRateLimited(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) { c.Limits.SubscribeBurst = 3 })
	c := e.dial(mustKey(t), nil)
	c.register(token(1))
	for range 3 {
		c.subscribe()
	}
	c.send(wire.Subscribe{ReqID: 9})
	if m := expect[wire.Error](c); m.ReqID != 9 || m.Code != wire.CodeRateLimited {
		t.Fatalf("fourth Subscribe answered %+v, want Error{9, RateLimited}", m)
	}
	e.clock.Advance(time.Second)
	c.subscribe()
}

// TestFloodingConnectionClosed checks that a connection that keeps
// sending Acks over its rate is closed: refusing each would still cost the
// relay its decryption and decoding.
func TestFloodingConnectionClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) { c.Limits.AckBurst = 10 })
	c := e.dial(mustKey(t), nil)
	c.register(token(1))
	go func() {
		for i := range 1000 {
			if c.ch.Send(context.Background(), mustFrame(wire.Ack{Seqs: []uint64{uint64(i + 1)}})) != nil {
				return
			}
		}
	}()
	if err := c.closed(); err == nil || !strings.Contains(err.Error(), "over its rate") {
		t.Fatalf("ServeConn of an ack flood = %v, want it closed for going over its rate", err)
	}
}
