package relay_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/wire"
)

// slowStore delays every Pending read, as a busy disk would, so that
// pushes published during a Subscribe's read overflow the queue.
type slowStore struct {
	relay.Store
	delay time.Duration
}

func (s slowStore) Pending(ctx context.Context, mb [16]byte, after uint64, limit int) ([]relay.Envelope, error) {
	time.Sleep(s.delay)
	return s.Store.Pending(ctx, mb, after, limit)
}

// TestSubscribeOKAfterBacklog checks docs/protocol.md section 6.4: the OK
// answering a Subscribe comes after a Deliver of every envelope pending
// when the Subscribe was sent, also when the backlog spans many store
// pages and new envelopes overflow the push queue meanwhile.
func TestSubscribeOKAfterBacklog(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		pending int
		live    bool // keep sending while the Subscribe is handled
	}{
		{"one", 1, false},
		{"pages", 500, false}, // pendingPage is 64
		{"pages with overflow", 300, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(c *relay.Config) {
				c.Store = slowStore{Store: c.Store, delay: 2 * time.Millisecond}
				c.Limits.DeliverQueue = 2
				// The live sender may send 2,000 envelopes from one key
				// while the backlog is read: past the key's burst.
				c.Limits.KeyRate = -1
			})
			bobKey := mustKey(t)
			bob := e.dial(bobKey, nil)
			bob.register(token(60))
			anon := e.dial(mustKey(t), nil)
			for i := range tc.pending {
				mustSendOK(t, anon.sendTo(bob.mailbox, token(60), id(i), []byte{byte(i)}))
			}
			var wg sync.WaitGroup
			stop := make(chan struct{})
			if tc.live {
				live := e.dial(mustKey(t), nil)
				wg.Go(func() {
					for i := tc.pending; i < tc.pending+2000; i++ {
						select {
						case <-stop:
							return
						default:
						}
						live.send(wire.Send{ID: id(i), To: bob.mailbox, Token: token(60), Envelope: []byte{byte(i)}})
						if m, ok := live.next().(wire.SendOK); !ok {
							t.Errorf("a live send failed: %+v", m)
							return
						}
					}
				})
			}
			got := map[[16]byte]bool{}
			for _, d := range bob.subscribe() {
				got[d.ID] = true
			}
			close(stop)
			wg.Wait()
			for i := range tc.pending {
				if !got[id(i)] {
					t.Fatalf("envelope %d of %d pending came after the Subscribe's OK (or never)", i, tc.pending)
				}
			}
			// A second Subscribe re-sends the backlog before its own OK.
			bob.drain()
			bob.send(wire.Subscribe{ReqID: 9})
			again := map[[16]byte]bool{}
			for {
				m := bob.next()
				if ok, isOK := m.(wire.OK); isOK {
					if ok.ReqID != 9 {
						t.Fatalf("OK for request %d, want 9", ok.ReqID)
					}
					break
				}
				if d, isD := m.(wire.Deliver); isD {
					again[d.ID] = true
				}
			}
			for i := range tc.pending {
				if !again[id(i)] {
					t.Fatalf("envelope %d was not re-sent before the second Subscribe's OK", i)
				}
			}
		})
	}
}

// TestSubscribeOKWhileSendsNeverStop checks that the OK does not wait for
// the end of the store when envelopes arrive faster than the relay reads
// them: it comes once the envelopes pending at the Subscribe are sent.
func TestSubscribeOKWhileSendsNeverStop(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) {
		c.Store = slowStore{Store: c.Store, delay: 20 * time.Millisecond}
		c.Limits.KeyRate, c.Limits.AddrRate = -1, -1
		c.Limits.MailboxCount, c.Limits.MailboxBytes = -1, -1
	})
	bob := e.dial(mustKey(t), nil)
	bob.register(token(61))
	anon := e.dial(mustKey(t), nil)
	const pending = 200
	for i := range pending {
		mustSendOK(t, anon.sendTo(bob.mailbox, token(61), id(i), []byte{byte(i)}))
	}
	// A pipelining sender stores far more than 64 envelopes per 20 ms
	// page read, until the Subscribe is answered.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	live := e.dial(mustKey(t), nil)
	wg.Go(func() {
		for i := pending; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			f, err := wire.NewFrame(wire.Send{ID: [16]byte{'l', byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}, To: bob.mailbox, Token: token(61), Envelope: []byte{1}})
			if err != nil {
				t.Error(err)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = live.ch.Send(ctx, f)
			cancel()
			if err != nil {
				return
			}
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case _, ok := <-live.msgs:
				if !ok {
					return
				}
			}
		}
	})
	// Subscribe only once the sender is ahead by three pages, however
	// slowly a loaded machine runs it (this used to be checked after the
	// fact, failing the test on a busy machine).
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
		u, err := e.store.Usage(context.Background(), bob.mailbox)
		if err != nil {
			t.Fatal(err)
		}
		if u.Count >= pending+3*64 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 2 minutes the mailbox holds only %d envelopes", u.Count)
		}
	}
	got := map[[16]byte]bool{}
	// The backlog and its OK may come slowly on a loaded machine (the
	// store reads a page per 20 ms, the sender competes for the CPU):
	// wait for each frame as long as the machine needs, and judge the
	// relay by what it sent before the OK, not by the clock. A relay that
	// waited for the end of the store would push without end.
	u, err := e.store.Usage(context.Background(), bob.mailbox)
	if err != nil {
		t.Fatal(err)
	}
	limit := 4*u.Count + 10_000
	bob.send(wire.Subscribe{ReqID: 2})
	for n := 0; ; n++ {
		m := bob.nextWithin(2 * time.Minute)
		if ok, isOK := m.(wire.OK); isOK && ok.ReqID == 2 {
			break
		}
		d, isDeliver := m.(wire.Deliver)
		if !isDeliver {
			t.Fatalf("got %T %+v before the Subscribe's OK, want Deliver or OK", m, m)
		}
		got[d.ID] = true
		if n > limit {
			t.Fatalf("no OK after %d envelopes pushed (%d were pending at the Subscribe): the relay waits for the end of the store", n, u.Count)
		}
	}
	close(stop)
	wg.Wait()
	for i := range pending {
		if !got[id(i)] {
			t.Fatalf("envelope %d of %d pending came after the Subscribe's OK (or never)", i, pending)
		}
	}
}
