package relayclient

import (
	"fmt"
	"testing"
	"time"
)

// simulate runs a transfer through a bottleneck of rate bytes per second
// with a fixed round trip of base: pieces are sent while the window has
// room and served one at a time in order; each is acknowledged base after
// it leaves the bottleneck. It returns the throughput and the worst
// queueing delay a piece saw in the second half (once the window has
// settled).
func simulate(rate float64, base time.Duration, total int) (throughput float64, worstQueue time.Duration) {
	p := newPacer()
	var (
		now      time.Duration
		linkFree time.Duration // when the bottleneck is idle again
		sent     int
		acked    int
		inflight []struct {
			n       int
			sentAt  time.Duration
			ackAt   time.Duration
			waiting time.Duration
		}
		bytesInFlight int
		halfTime      time.Duration
	)
	for acked < total {
		for sent < total && (len(inflight) == 0 || bytesInFlight+p.piece() <= p.window) {
			n := min(p.piece(), total-sent)
			start := max(now, linkFree)
			linkFree = start + time.Duration(float64(n)/rate*float64(time.Second))
			inflight = append(inflight, struct {
				n       int
				sentAt  time.Duration
				ackAt   time.Duration
				waiting time.Duration
			}{n, now, linkFree + base, start - now})
			sent += n
			bytesInFlight += n
		}
		a := inflight[0]
		inflight = inflight[1:]
		now = a.ackAt
		bytesInFlight -= a.n
		acked += a.n
		p.sample(a.ackAt-a.sentAt, a.n)
		if acked > total/2 {
			if halfTime == 0 {
				halfTime = now
			}
			worstQueue = max(worstQueue, a.waiting)
		}
	}
	return float64(total/2) / (now - halfTime).Seconds(), worstQueue
}

// TestPacerKeepsQueueShort checks the window on paths from a throttled
// 140 kbit/s link to a fast LAN: the transfer runs at most of the
// bottleneck's rate while the queue ahead of another message stays near
// the target (on a slow link a few 4 KiB pieces are the floor).
func TestPacerKeepsQueueShort(t *testing.T) {
	for _, tc := range []struct {
		rate  float64 // bytes per second
		base  time.Duration
		total int
	}{
		{140e3 / 8, 100 * time.Millisecond, 2 << 20},
		{1e6, 50 * time.Millisecond, 32 << 20},
		{12.5e6, 20 * time.Millisecond, 256 << 20},
		{100e6, time.Millisecond, 1 << 30},
	} {
		t.Run(fmt.Sprintf("%.0fB/s_%v", tc.rate, tc.base), func(t *testing.T) {
			thr, q := simulate(tc.rate, tc.base, tc.total)
			piece := time.Duration(float64(paceTinyPiece) / tc.rate * float64(time.Second))
			if thr < 0.8*tc.rate {
				t.Errorf("throughput %.0f B/s, want at least 80%% of %.0f", thr, tc.rate)
			}
			if limit := 4*paceTarget + 3*piece; q > limit {
				t.Errorf("worst queueing delay %v, want at most %v", q, limit)
			}
			t.Logf("throughput %.0f B/s (%.0f%%), worst queue %v", thr, 100*thr/tc.rate, q)
		})
	}
}
