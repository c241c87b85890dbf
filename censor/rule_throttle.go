package censor

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// ThrottleRule holds matching flows to a fixed rate in both directions:
// the transfer goes on, slowly, as a plateau rather than an error. Source:
// Xue et al., "Throttling Twitter: An Emerging Censorship Technique in
// Russia", IMC 2021, which measured flows whose SNI matched held to
// 130-150 kbps both ways (docs/gfw.md section 4); the 2017 WhatsApp
// block throttled non-TLS, non-HTTP flows too (section 2). The published
// censor dropped packets to reach the rate; a TCP proxy delays them, which
// the endpoints see as the same plateau.
type ThrottleRule struct {
	Match
	// RateBPS is the rate in bits per second in each direction; 140,000
	// when zero.
	RateBPS float64 `json:"rate_bps,omitempty"`
	// Burst is the token bucket's size in bytes: how much may pass at
	// once after an idle period; 16 KiB when zero.
	Burst int `json:"burst,omitempty"`
}

// The default throttle.
const (
	ThrottleRateBPS = 140_000
	throttleBurst   = 16 << 10
)

func (r *ThrottleRule) validate() error {
	if r.RateBPS < 0 || r.Burst < 0 {
		return fmt.Errorf("rate_bps and burst must not be negative")
	}
	if r.RateBPS > 0 && r.RateBPS < 8 {
		return fmt.Errorf("rate_bps %v is below one byte per second", r.RateBPS)
	}
	return r.Match.validate()
}

type throttleEval struct {
	noAdmit
	rule *ThrottleRule
	id   string
}

func (ev *throttleEval) inspect(e *Engine, f *Flow, now time.Time) (Verdict, bool) {
	if _, ok := ev.rule.matchFlow(f); !ok {
		return Verdict{}, false
	}
	rate := ev.rule.RateBPS
	if rate == 0 {
		rate = ThrottleRateBPS
	}
	burst := ev.rule.Burst
	if burst == 0 {
		burst = throttleBurst
	}
	return Verdict{
		Rule:     ev.id,
		Action:   Throttle,
		Evidence: fmt.Sprintf("%s flow to %v throttled to %.0f bit/s each way", f.Kind, f.Server, rate),
		RateBPS:  rate,
		Burst:    burst,
	}, true
}

// bucket is a token bucket over a Clock: wait(n) lets n bytes pass at the
// bucket's rate, after at most burst bytes at once. Tokens may go negative
// (a debt), so a write larger than the burst waits in proportion to its
// size. It is safe for concurrent use.
type bucket struct {
	clock Clock
	rate  float64 // bytes per second
	burst float64

	mu     sync.Mutex // mu protects tokens and last
	tokens float64
	last   time.Time
}

func newBucket(clock Clock, rateBPS float64, burst int) *bucket {
	return &bucket{clock: clock, rate: rateBPS / 8, burst: float64(burst), tokens: float64(burst), last: clock.Now()}
}

// wait takes n tokens and sleeps for any debt.
func (b *bucket) wait(ctx context.Context, n int) error {
	b.mu.Lock()
	now := b.clock.Now()
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(b.burst, b.tokens+el.Seconds()*b.rate)
		b.last = now
	}
	b.tokens -= float64(n)
	var d time.Duration
	if b.tokens < 0 {
		d = time.Duration(-b.tokens / b.rate * float64(time.Second))
	}
	b.mu.Unlock()
	return b.clock.Sleep(ctx, d)
}
