package censor

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"
)

// Clock is the time source of the engine and the middlebox.
//
// Now returns the current time. Sleep waits for d to pass on this clock or
// for ctx to be done, whichever comes first, and returns ctx.Err() in the
// second case.
type Clock interface {
	Now() time.Time
	Sleep(ctx context.Context, d time.Duration) error
}

// SystemClock is the wall clock. It is used when a Clock field is nil.
type SystemClock struct{}

var _ Clock = SystemClock{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Sleep waits for d or until ctx is done.
func (SystemClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// FakeClock is a virtual clock for tests: time moves only when Advance or
// Set is called, or when a goroutine sleeps. Sleep advances the clock by d
// and returns at once, so a throttled transfer or a 180 s penalty plays
// out instantly and deterministically; with several goroutines sleeping at
// the same time their sleeps add up, so measure one flow at a time.
// The zero value starts at 2000-01-01 00:00:00 UTC. It is safe for
// concurrent use.
type FakeClock struct {
	mu  sync.Mutex // mu protects now
	now time.Time
}

var _ Clock = (*FakeClock)(nil)

var fakeEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Now returns the clock's current time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.now.IsZero() {
		c.now = fakeEpoch
	}
	return c.now
}

// Advance moves the clock forward by d.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.now.IsZero() {
		c.now = fakeEpoch
	}
	c.now = c.now.Add(d)
}

// Set moves the clock to t.
func (c *FakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// Sleep advances the clock by d and returns at once (or ctx.Err() if ctx
// is already done).
func (c *FakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d > 0 {
		c.Advance(d)
	}
	return nil
}

// randSource draws numbers from an io.Reader (crypto/rand when nil). It is
// not safe for concurrent use: the engine calls it under its mutex.
type randSource struct {
	r   io.Reader
	buf [8]byte
}

// uint64 returns 8 random bytes as a number.
func (s *randSource) uint64() uint64 {
	r := s.r
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, s.buf[:]); err != nil {
		// An exhausted or failing Rand is a bug in the caller's setup; a
		// censor that silently stops being random would hide it.
		panic(fmt.Sprintf("censor: read randomness: %v", err))
	}
	return binary.LittleEndian.Uint64(s.buf[:])
}

// float returns a uniform number in [0, 1).
func (s *randSource) float() float64 {
	return float64(s.uint64()>>11) / (1 << 53)
}

// between returns a uniform number in [lo, hi].
func (s *randSource) between(lo, hi float64) float64 {
	if hi <= lo {
		return lo
	}
	return lo + (hi-lo)*s.float()
}

// duration returns a uniform duration in [lo, hi].
func (s *randSource) duration(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(s.uint64()%uint64(hi-lo+1))
}
