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
)

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
	pending   int        // requests awaiting an answer
	owedSince time.Time  // since when the next answer is awaited; zero when none is
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
	w.rate(now)
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

// Awaiting notes that the client sent a request the peer answers.
func (w *Watched) Awaiting() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending == 0 {
		w.owedSince = w.now()
	}
	w.pending++
}

// Answered notes that an answer came. Answers come in order, so the clock
// of the next one awaited starts now.
func (w *Watched) Answered() {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending == 0 {
		return
	}
	rtt := now.Sub(w.owedSince)
	if w.srtt == 0 {
		w.srtt = rtt
	} else {
		w.srtt = (7*w.srtt + rtt) / 8
	}
	w.pending--
	w.owedSince = time.Time{}
	if w.pending > 0 {
		w.owedSince = now
	}
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

func (w *Watched) throttleRate() int64 {
	if w.cfg.ThrottleRate > 0 {
		return w.cfg.ThrottleRate
	}
	return DefaultThrottleRate
}

// StallAfter returns how long an answer may be awaited now.
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
// wrapping ErrStalled that says why it looks blocked or throttled.
func (w *Watched) Check() error {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rate(now)
	if !w.owedSince.IsZero() {
		if waited := now.Sub(w.owedSince); waited > w.stallAfter() {
			return fmt.Errorf("no answer from the relay for %v (round trip %v): %w", waited.Round(time.Millisecond), w.srtt.Round(time.Millisecond), ErrStalled)
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
