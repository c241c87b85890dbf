package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// limiter is a set of token buckets, one per key, refilled at rate tokens
// per second up to burst. A limiter with rate 0 allows everything.
type limiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	// mu protects buckets.
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	return &limiter{rate: rate, burst: float64(max(burst, 1)), now: now, buckets: make(map[string]*bucket)}
}

// allow takes one token from key's bucket and reports whether there was one.
func (l *limiter) allow(key string) bool { return l.allowN(key, 1) }

// allowN takes n tokens from key's bucket and reports whether there were
// that many (a cost above the burst is charged as the burst).
func (l *limiter) allowN(key string, n float64) bool {
	if l.rate <= 0 {
		return true
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+elapsed*l.rate)
		b.last = now
	}
	n = min(n, l.burst)
	if b.tokens < n {
		return false
	}
	b.tokens -= n
	return true
}

// sweep forgets buckets that have refilled completely: they behave exactly
// like new ones, so the map holds only keys that were busy recently.
func (l *limiter) sweep() {
	if l.rate <= 0 {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}

// size is the number of buckets held.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// addrKey is the rate-limit key of a remote address: the IPv4 address, or
// the /64 prefix of an IPv6 address (one subscriber usually holds a whole
// /64), or the address's string form when it is not IP (net.Pipe).
func addrKey(a net.Addr) string {
	if a == nil {
		return ""
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.Network() + ":" + a.String()
	}
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, err := ip.Prefix(64)
	if err != nil {
		return ip.String()
	}
	return p.String()
}
