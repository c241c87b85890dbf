package fallback_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/ferry-im/ferry/transport/fallback"
)

// clock is a settable time.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)} }
func pipe(t *testing.T) (net.Conn, net.Conn) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// exchange sends a request on w's side and reads the answer after rtt.
func exchange(t *testing.T, w *fallback.Watched, peer net.Conn, c *clock, rtt time.Duration) {
	t.Helper()
	go func() { b := make([]byte, 1); peer.Read(b); peer.Write(b) }()
	if _, err := w.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	w.Awaiting()
	c.add(rtt)
	if _, err := w.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	w.Answered()
}

func TestStallAfterUnansweredWrite(t *testing.T) {
	c := newClock()
	a, b := pipe(t)
	w := fallback.Watch(a, fallback.WatchConfig{Now: c.now})
	for range 10 {
		exchange(t, w, b, c, 100*time.Millisecond)
	}
	if got := w.StallAfter(); got != 1500*time.Millisecond {
		t.Fatalf("StallAfter with a 100 ms round trip = %v, want the 1.5 s floor", got)
	}
	go func() { b.Read(make([]byte, 1)) }() // the peer reads but never answers
	w.Write([]byte{2})
	w.Awaiting()
	c.add(1400 * time.Millisecond)
	if err := w.Check(); err != nil {
		t.Fatalf("Check before the threshold: %v", err)
	}
	c.add(200 * time.Millisecond)
	if err := w.Check(); !errors.Is(err, fallback.ErrStalled) {
		t.Fatalf("Check after 1.6 s unanswered: %v, want ErrStalled", err)
	}
}

// TestPushesDoNotHideAStall: a censor that drops only the client's packets
// lets the relay's pushes through; the request still goes unanswered.
func TestPushesDoNotHideAStall(t *testing.T) {
	c := newClock()
	a, b := pipe(t)
	w := fallback.Watch(a, fallback.WatchConfig{Now: c.now})
	go func() {
		for {
			if _, err := b.Write([]byte("push")); err != nil {
				return
			}
		}
	}()
	w.Awaiting()
	for range 20 {
		c.add(100 * time.Millisecond)
		w.Read(make([]byte, 4))
	}
	if err := w.Check(); !errors.Is(err, fallback.ErrStalled) {
		t.Fatalf("Check with pushes flowing and the request unanswered for 2 s: %v", err)
	}
	w.Answered()
	if err := w.Check(); err != nil {
		t.Fatalf("Check once answered: %v", err)
	}
}

func TestSlowPathStallsLater(t *testing.T) {
	c := newClock()
	a, b := pipe(t)
	w := fallback.Watch(a, fallback.WatchConfig{Now: c.now})
	for range 20 {
		exchange(t, w, b, c, time.Second)
	}
	if got := w.StallAfter(); got < 3500*time.Millisecond || got > 4500*time.Millisecond {
		t.Fatalf("StallAfter with a 1 s round trip = %v, want about 4 s", got)
	}
}

func TestIdleIsNotStalled(t *testing.T) {
	c := newClock()
	a, b := pipe(t)
	w := fallback.Watch(a, fallback.WatchConfig{Now: c.now})
	exchange(t, w, b, c, 10*time.Millisecond)
	c.add(time.Hour)
	if err := w.Check(); err != nil {
		t.Fatalf("an idle session with nothing owed: %v", err)
	}
}

// TestThrottleWhileExpecting: a download that trickles at 140 kbit/s (the
// censor's throttle) counts as throttled after 3 s; the same trickle when
// nothing is awaited does not.
func TestThrottleWhileExpecting(t *testing.T) {
	for _, expecting := range []bool{true, false} {
		c := newClock()
		a, b := pipe(t)
		w := fallback.Watch(a, fallback.WatchConfig{Now: c.now})
		if expecting {
			w.Expect(10 << 20)
		}
		chunk := make([]byte, 1750) // 17,500 bytes/s = 140 kbit/s in 100 ms steps
		go func() {
			for {
				if _, err := b.Write(chunk); err != nil {
					return
				}
			}
		}()
		var err error
		for range 50 {
			c.add(100 * time.Millisecond)
			if _, rerr := w.Read(make([]byte, len(chunk))); rerr != nil {
				t.Fatal(rerr)
			}
			if err = w.Check(); err != nil {
				break
			}
		}
		if expecting != errors.Is(err, fallback.ErrStalled) {
			t.Fatalf("expecting %v: after 5 s at 140 kbit/s Check = %v", expecting, err)
		}
		a.Close()
	}
}
