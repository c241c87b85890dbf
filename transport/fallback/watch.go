package fallback

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Defaults of WatchConfig.
const (
	DefaultMinStall     = 1500 * time.Millisecond
	DefaultMaxStall     = 10 * time.Second
	DefaultThrottleRate = 32 << 10 // bytes per second: a quarter of a megabit
	DefaultThrottleFor  = 3 * time.Second
	DefaultMinRate      = 4 << 10 // bytes per second: 32 kbit/s, a quarter of the censor's throttle
)

// smallExchange is the most bytes a request and the pushes before its
// answer may carry for the wait to count as a round trip: a larger one's
// wait is mostly transfer time.
const smallExchange = 4 << 10

// ErrStalled is wrapped by Watched.Check when the session over the conn
// looks blocked or throttled.
var ErrStalled = errors.New("session stalled")

// WatchConfig configures Watch. The zero value works.
type WatchConfig struct {
	// MinStall and MaxStall bound how long an answer may be awaited
	// before the session counts as blocked: four smoothed round trips,
	// clamped to [MinStall, MaxStall]. If zero, DefaultMinStall and
	// DefaultMaxStall.
	MinStall, MaxStall time.Duration
	// MinRate is the slowest rate, in bytes per second, at which a path
	// still counts as moving: an awaited answer is also given the time
	// the bytes ahead of it take at this rate (the request and what the
	// client sent before it since the last answer, and what the peer sent
	// while it was awaited), so a slow but moving path is never called
	// stalled. If zero, DefaultMinRate.
	MinRate int64
	// ThrottleRate and ThrottleFor: while the client expects bytes
	// (Expect), reading fewer than ThrottleRate bytes per second for
	// ThrottleFor counts as throttled. If zero, DefaultThrottleRate and
	// DefaultThrottleFor.
	ThrottleRate int64
	ThrottleFor  time.Duration
	// Now gives the time; if nil, time.Now.
	Now func() time.Time
}

// Watched is a conn whose progress is watched. The relay answers a
// client's requests (sends, subscribes, pings), so a request left
// unanswered means the path is cut even when no error shows: a censor that
// drops packets leaves the connection open and silent, and one that drops
// only the client's packets still lets the relay's pushes through. The
// client says when it sends a request (Awaiting) and when an answer comes
// (Answered); bytes read are counted for throttling. Its methods are safe
// for concurrent use.
type Watched struct {
	net.Conn
	cfg WatchConfig

	mu        sync.Mutex // mu protects the fields below
	marks     []int64    // per request awaiting an answer, in order: sent when it was awaited
	owedSince time.Time  // since when the next answer is awaited; zero when none is
	sent      int64      // bytes handed to Write so far
	acked     int64      // bytes of sent known to have reached the peer: those before the oldest awaited request
	readOwed  int64      // bytes read since owedSince
	srtt      time.Duration
	expect    int64     // bytes the client still expects
	slowSince time.Time // start of the current slow stretch while expecting; zero when none
	winStart  time.Time
	winBytes  int64
}

// Watch wraps c.
func Watch(c net.Conn, cfg WatchConfig) *Watched {
	return &Watched{Conn: c, cfg: cfg}
}

func (w *Watched) now() time.Time {
	if w.cfg.Now != nil {
		return w.cfg.Now()
	}
	return time.Now()
}

// Read reads from the conn, noting progress.
func (w *Watched) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if n > 0 {
		w.read(int64(n), w.now())
	}
	return n, err
}

func (w *Watched) read(n int64, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expect = max(w.expect-n, 0)
	w.winBytes += n
	if len(w.marks) > 0 {
		w.readOwed += n
	}
	w.rate(now)
}

// Write writes to the conn. Its bytes count as on their way from the
// call on: on a slow path a request's bytes sit in buffers along it (the
// socket's, a middlebox's) long after Write returns, or Write blocks
// until they drain.
func (w *Watched) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.sent += int64(len(p))
	w.mu.Unlock()
	return w.Conn.Write(p)
}

// rate closes the current one-second window if it is over and updates the
// slow stretch.
func (w *Watched) rate(now time.Time) {
	if w.winStart.IsZero() {
		w.winStart = now
		return
	}
	d := now.Sub(w.winStart)
	if d < time.Second {
		return
	}
	slow := float64(w.winBytes)/d.Seconds() < float64(w.throttleRate())
	switch {
	case w.expect == 0 || !slow:
		w.slowSince = time.Time{}
	case w.slowSince.IsZero():
		w.slowSince = w.winStart
	}
	w.winStart, w.winBytes = now, 0
}

// Awaiting notes that the client is about to send a request the peer
// answers (call it before writing the request).
func (w *Watched) Awaiting() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.marks) == 0 {
		w.owedSince, w.readOwed = w.now(), 0
	}
	w.marks = append(w.marks, w.sent)
}

// Answered notes that an answer came. Answers come in order, so the clock
// of the next one awaited starts now, and everything written before the
// next awaited request has reached the peer.
func (w *Watched) Answered() {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.marks) == 0 {
		return
	}
	// Only a small exchange's wait is a round trip; a large one's is
	// mostly the time its bytes took.
	if w.inFlight()+w.readOwed <= smallExchange {
		rtt := now.Sub(w.owedSince)
		if w.srtt == 0 {
			w.srtt = rtt
		} else {
			w.srtt = (7*w.srtt + rtt) / 8
		}
	}
	end, k := w.group()
	answered := w.marks[0]
	w.marks = w.marks[1:]
	w.owedSince, w.readOwed = time.Time{}, 0
	switch {
	case len(w.marks) == 0:
		w.acked = w.sent
		w.marks = nil
		return
	case w.marks[0] > answered:
		w.acked = max(w.acked, w.marks[0])
	default: // the next is of the same batch: the answered one's share is through
		w.acked += max(end-w.acked, 0) / k
	}
	w.owedSince = now
}

// group returns the end of the oldest awaited request's batch (the
// requests awaited before any of them was written, which share a mark:
// the start of the next request awaited after them, or all written so
// far) and how many requests it holds. w.mu must be held and a request
// awaited.
func (w *Watched) group() (end, k int64) {
	end, k = w.sent, 1
	for _, m := range w.marks[1:] {
		if m > w.marks[0] {
			return m, k
		}
		k++
	}
	return end, k
}

// inFlight returns how many bytes the oldest awaited answer waits behind
// on the client's side: those written since the last answer up to the
// start of the next request awaited after it (all written so far when
// there is none); in a batch, its share of what the batch wrote. w.mu
// must be held and a request awaited.
func (w *Watched) inFlight() int64 {
	end, k := w.group()
	return max(end-w.acked, 0) / k
}

// Expect tells the watcher that the client waits for n more bytes (a
// download, a batch of messages), which makes a low read rate count as
// throttling.
func (w *Watched) Expect(n int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expect += n
}

// RTT returns the smoothed round trip seen so far (0 before any).
func (w *Watched) RTT() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.srtt
}

func (w *Watched) minRate() int64 {
	if w.cfg.MinRate > 0 {
		return w.cfg.MinRate
	}
	return DefaultMinRate
}

func (w *Watched) throttleRate() int64 {
	if w.cfg.ThrottleRate > 0 {
		return w.cfg.ThrottleRate
	}
	return DefaultThrottleRate
}

// StallAfter returns how long a small request's answer may be awaited
// now: four smoothed round trips within [MinStall, MaxStall]. Check adds
// the time the bytes ahead of the answer take at MinRate.
func (w *Watched) StallAfter() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stallAfter()
}

func (w *Watched) stallAfter() time.Duration {
	lo, hi := w.cfg.MinStall, w.cfg.MaxStall
	if lo <= 0 {
		lo = DefaultMinStall
	}
	if hi <= 0 {
		hi = DefaultMaxStall
	}
	return min(max(4*w.srtt, lo), hi)
}

// Check returns nil while the session makes progress, or an error
// wrapping ErrStalled that says why it looks blocked or throttled. An
// answer awaited counts as stalled once it is later than StallAfter plus
// the time the bytes ahead of it take at MinRate: the client's bytes
// since the last answer, up to and including the request, and the peer's
// bytes read while it was awaited. A path that moves at MinRate or
// faster is slow, not stalled; one cut while a large request is on its
// way is noticed that much later.
func (w *Watched) Check() error {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rate(now)
	if len(w.marks) > 0 {
		ahead := w.inFlight() + w.readOwed
		limit := w.stallAfter() + time.Duration(float64(ahead)/float64(w.minRate())*float64(time.Second))
		if waited := now.Sub(w.owedSince); waited > limit {
			return fmt.Errorf("no answer from the relay for %v (round trip %v, %d bytes ahead of it): %w", waited.Round(time.Millisecond), w.srtt.Round(time.Millisecond), ahead, ErrStalled)
		}
	}
	throttleFor := w.cfg.ThrottleFor
	if throttleFor <= 0 {
		throttleFor = DefaultThrottleFor
	}
	if !w.slowSince.IsZero() && now.Sub(w.slowSince) >= throttleFor {
		return fmt.Errorf("under %d bytes/s for %v while %d bytes are awaited: %w", w.throttleRate(), now.Sub(w.slowSince).Round(time.Second), w.expect, ErrStalled)
	}
	return nil
}
