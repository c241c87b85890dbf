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

// ackCounter counts the Acks that reach the store and the seqs they name.
type ackCounter struct {
	relay.Store
	acks, seqs atomic.Int64
}

func (s *ackCounter) Ack(ctx context.Context, mb [16]byte, seqs []uint64) (int, error) {
	s.acks.Add(1)
	s.seqs.Add(int64(len(seqs)))
	return s.Store.Ack(ctx, mb, seqs)
}

// delivered puts n envelopes in c's mailbox and returns their Delivers
// from c's Subscribe.
func delivered(t *testing.T, e *env, c *client, n int) []wire.Deliver {
	t.Helper()
	for i := range n {
		env := relay.Envelope{ID: id(i), Received: time.Unix(1790000000, 0), Data: []byte("x")}
		if _, _, err := e.store.Put(context.Background(), c.mailbox, env, relay.Quota{}); err != nil {
			t.Fatal(err)
		}
	}
	ds := c.subscribe()
	if len(ds) != n {
		t.Fatalf("%d delivered, want %d", len(ds), n)
	}
	return ds
}

// TestAckOnlyDelivered: the store sees only the seqs of an Ack that were
// delivered on its connection, at most as many as were delivered and not
// yet acknowledged. Before, an Ack of 4,096 made-up seqs was a store
// write of 4,096 seqs whatever the mailbox held (the ack-flood attack of
// issue 13 kept the SQLite writer busy with them).
func TestAckOnlyDelivered(t *testing.T) {
	t.Parallel()
	store := &ackCounter{Store: memstore.New()}
	e := newEnv(t, func(c *relay.Config) { c.Store = store })
	c := e.dial(mustKey(t), nil)
	c.register(token(1))
	madeUp := make([]uint64, wire.MaxAcks)
	for i := range madeUp {
		madeUp[i] = uint64(i + 1)
	}
	c.send(wire.Ack{Seqs: madeUp})
	c.quiet()
	if n := store.acks.Load(); n != 0 {
		t.Fatalf("%d Acks reached the store from a connection delivered nothing, want 0", n)
	}
	ds := delivered(t, e, c, 2)
	c.send(wire.Ack{Seqs: append(madeUp[3:], ds[0].Seq, ds[0].Seq, ds[1].Seq)})
	c.quiet()
	if n := store.seqs.Load(); n > 2 {
		t.Fatalf("the store was given %d seqs after 2 deliveries, want at most 2", n)
	}
	if u, _ := e.store.Usage(context.Background(), c.mailbox); u.Count != 0 {
		t.Fatalf("%d envelopes pending after both were acknowledged among made-up seqs, want 0", u.Count)
	}
	// Another connection of the same key was delivered nothing.
	other := e.dial(c.key, nil)
	before := store.acks.Load()
	other.send(wire.Ack{Seqs: []uint64{ds[0].Seq}})
	other.quiet()
	if store.acks.Load() != before {
		t.Fatal("an Ack of a seq delivered on another connection reached the store")
	}
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
	ds := delivered(t, e, c, 1051)
	frames := make([]wire.Frame, 1050) // 50 over the burst: not yet a flood that closes the connection
	for i := range frames {
		frames[i] = mustFrame(wire.Ack{Seqs: []uint64{ds[i].Seq}})
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
	c.send(wire.Ack{Seqs: []uint64{ds[1050].Seq}})
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
