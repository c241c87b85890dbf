package fallback_test

import (
	"errors"
	"io"
	"net"
	"sync"
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

// registration is the size of the largest request a client makes when it
// registers (PutPrekeys with its post-quantum prekeys).
const registration = 45 << 10

// TestSlowRequestIsNotStalled: a 45 KB request over a path held to 140
// kbit/s (the censor's throttle, 17,500 bytes/s) takes 2.6 s to reach the
// peer, longer than the 1.5 s a small request's answer may take. It is
// slow, not stalled; a cut once it is answered is still noticed after
// 1.5 s, and a cut while a large request is on its way is noticed too.
func TestSlowRequestIsNotStalled(t *testing.T) {
	c := newClock()
	a, b := pipe(t)
	w := fallback.Watch(a, fallback.WatchConfig{Now: c.now})
	for range 10 {
		exchange(t, w, b, c, 100*time.Millisecond)
	}
	upload := make(chan int64)
	go func() { n, _ := io.CopyN(io.Discard, b, registration); upload <- n }()
	w.Awaiting()
	if _, err := w.Write(make([]byte, registration)); err != nil {
		t.Fatal(err)
	}
	if n := <-upload; n != registration {
		t.Fatalf("peer read %d bytes, want %d", n, registration)
	}
	transfer := time.Duration(registration) * time.Second / 17500
	for waited := time.Duration(0); waited < transfer+100*time.Millisecond; waited += 100 * time.Millisecond {
		if err := w.Check(); err != nil {
			t.Fatalf("Check %v into a %d-byte request at 140 kbit/s: %v", waited, registration, err)
		}
		c.add(100 * time.Millisecond)
	}
	go b.Write([]byte{1})
	if _, err := w.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	w.Answered()
	if got := w.StallAfter(); got != 1500*time.Millisecond {
		t.Errorf("StallAfter after the slow request = %v, want the 1.5 s floor still (its wait was transfer time, not a round trip)", got)
	}

	// Cut now: a small request goes unanswered.
	go func() { b.Read(make([]byte, 1)) }()
	w.Awaiting()
	w.Write([]byte{2})
	c.add(1400 * time.Millisecond)
	if err := w.Check(); err != nil {
		t.Fatalf("Check 1.4 s into a small request after the slow one: %v", err)
	}
	c.add(300 * time.Millisecond)
	if err := w.Check(); !errors.Is(err, fallback.ErrStalled) {
		t.Fatalf("Check 1.7 s into an unanswered small request: %v, want ErrStalled", err)
	}
}

// TestCutDuringLargeRequest: a large request on a path that carries
// nothing is stalled once it is late by the time its bytes take at
// MinRate.
func TestCutDuringLargeRequest(t *testing.T) {
	c := newClock()
	a, b := pipe(t)
	w := fallback.Watch(a, fallback.WatchConfig{Now: c.now, MinRate: 8 << 10})
	go io.Copy(io.Discard, b) // the censor swallows the bytes
	w.Awaiting()
	w.Write(make([]byte, 80<<10))
	c.add(11 * time.Second) // 1.5 s + 80 KB at 8 KB/s = 11.5 s
	if err := w.Check(); err != nil {
		t.Fatalf("Check 11 s into an 80 KB request at a MinRate of 8 KB/s: %v", err)
	}
	c.add(time.Second)
	if err := w.Check(); !errors.Is(err, fallback.ErrStalled) {
		t.Fatalf("Check 12 s into an unanswered 80 KB request: %v, want ErrStalled", err)
	}
}

// TestDownloadAheadOfAnswer: an answer queued behind pushes (a backlog)
// that arrive at 140 kbit/s is not stalled while they arrive.
func TestDownloadAheadOfAnswer(t *testing.T) {
	c := newClock()
	a, b := pipe(t)
	w := fallback.Watch(a, fallback.WatchConfig{Now: c.now})
	go func() { b.Read(make([]byte, 1)) }()
	w.Awaiting()
	w.Write([]byte{1})
	chunk := make([]byte, 1750) // 17,500 bytes/s in 100 ms steps
	go func() {
		for range 40 {
			if _, err := b.Write(chunk); err != nil {
				return
			}
		}
	}()
	for i := range 40 {
		c.add(100 * time.Millisecond)
		if _, err := io.ReadFull(w, chunk); err != nil {
			t.Fatal(err)
		}
		if err := w.Check(); err != nil {
			t.Fatalf("Check after %d KB of pushes at 140 kbit/s in %v: %v", (i+1)*len(chunk)>>10, time.Duration(i+1)*100*time.Millisecond, err)
		}
	}
}

// TestThrottledPathCarriesRegistration runs the registration-sized
// request over loopback through a forwarder that holds both directions to
// 140 kbit/s, as the censor's throttle does, checking the watcher every
// 100 ms as the client does: it is answered and never called stalled.
func TestThrottledPathCarriesRegistration(t *testing.T) {
	t.Parallel()
	peer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		c, err := peer.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := io.CopyN(io.Discard, c, registration); err == nil {
			c.Write([]byte("answered"))
		}
		io.Copy(io.Discard, c)
	})
	fwd := throttle(t, &wg, peer.Addr().String(), 17500)
	nc, err := net.Dial("tcp", fwd)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	w := fallback.Watch(nc, fallback.WatchConfig{})
	answered := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(w, make([]byte, len("answered")))
		w.Answered()
		answered <- err
	}()
	start := time.Now()
	w.Awaiting()
	if _, err := w.Write(make([]byte, registration)); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-answered:
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d bytes answered after %v at 140 kbit/s", registration, time.Since(start).Round(time.Millisecond))
			return
		case <-tick.C:
			if err := w.Check(); err != nil {
				t.Fatalf("%v into a %d-byte request at 140 kbit/s: %v", time.Since(start).Round(time.Millisecond), registration, err)
			}
		case <-time.After(time.Minute):
			t.Fatal("no answer within a minute")
		}
	}
}

// throttle forwards one connection from a new loopback listener to
// upstream, holding each direction to rate bytes per second (in 100 ms
// steps), and returns the listener's address.
func throttle(t *testing.T, wg *sync.WaitGroup, upstream string, rate int) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	copyAt := func(dst, src net.Conn) {
		defer dst.Close()
		defer src.Close()
		buf := make([]byte, rate/10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
				time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
			}
			if err != nil {
				return
			}
		}
	}
	wg.Go(func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", upstream)
		if err != nil {
			c.Close()
			return
		}
		wg.Go(func() { copyAt(u, c) })
		wg.Go(func() { copyAt(c, u) })
	})
	return l.Addr().String()
}

// TestCutDuringBatch: a batch of 100 requests of 1 KB each (awaited all
// at once, then written together) on a path that carries nothing is
// stalled within 1.5 s and one request's 1 KB at MinRate, not the whole
// batch's 100 KB; on a path that answers them one by one it is not.
func TestCutDuringBatch(t *testing.T) {
	for _, answering := range []bool{true, false} {
		c := newClock()
		a, b := pipe(t)
		w := fallback.Watch(a, fallback.WatchConfig{Now: c.now})
		go io.Copy(io.Discard, b)
		for range 100 {
			w.Awaiting()
		}
		w.Write(make([]byte, 100<<10))
		var err error
		for i := 0; i < 40 && err == nil; i++ {
			c.add(100 * time.Millisecond)
			if answering && i < 30 {
				w.Answered()
			}
			err = w.Check()
		}
		switch {
		case answering && err != nil:
			t.Fatalf("a batch answered one by one every 100 ms: %v", err)
		case !answering && !errors.Is(err, fallback.ErrStalled):
			t.Fatalf("an unanswered batch of 100 KB after 4 s: %v, want ErrStalled", err)
		}
	}
}
