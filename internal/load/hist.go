package load

import (
	"math"
	"math/bits"
	"time"
)

// Hist is a latency histogram with about 3% resolution: bucket
// 32*e+s holds durations in microseconds whose top bit is e and next five
// bits are s. Histograms of different processes add up (Merge).
type Hist struct {
	Counts []uint64 `json:"counts"` // by bucket; trailing zeros trimmed
	N      uint64   `json:"n"`
}

const subBits = 5

func bucketOf(d time.Duration) int {
	us := uint64(max(d.Microseconds(), 0))
	if us < 1<<subBits {
		return int(us)
	}
	e := bits.Len64(us) - 1 - subBits
	return (e+1)<<subBits + int(us>>e) - 1<<subBits
}

// lowOf is the smallest duration in bucket b.
func lowOf(b int) time.Duration {
	if b < 1<<subBits {
		return time.Duration(b) * time.Microsecond
	}
	e := b>>subBits - 1
	return time.Duration(uint64(b&(1<<subBits-1)+1<<subBits)<<e) * time.Microsecond
}

// Add records d.
func (h *Hist) Add(d time.Duration) {
	b := bucketOf(d)
	if b >= len(h.Counts) {
		h.Counts = append(h.Counts, make([]uint64, b+1-len(h.Counts))...)
	}
	h.Counts[b]++
	h.N++
}

// Merge adds o's counts to h.
func (h *Hist) Merge(o Hist) {
	if len(o.Counts) > len(h.Counts) {
		h.Counts = append(h.Counts, make([]uint64, len(o.Counts)-len(h.Counts))...)
	}
	for b, n := range o.Counts {
		h.Counts[b] += n
	}
	h.N += o.N
}

// Quantile returns the duration below which a fraction q of the recorded
// ones fall (the low end of its bucket), or 0 for an empty histogram.
func (h *Hist) Quantile(q float64) time.Duration {
	if h.N == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.N)))
	var seen uint64
	for b, n := range h.Counts {
		seen += n
		if seen >= max(rank, 1) {
			return lowOf(b)
		}
	}
	return lowOf(len(h.Counts) - 1)
}
