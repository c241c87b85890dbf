package relayclient

import "time"

// pacer sizes a transfer's window: the bytes it keeps in flight. It is a
// delay-based controller in the manner of TCP Vegas and LEDBAT (RFC
// 6817): it takes the smallest round trip it has seen as the path's base
// delay and reads any excess as a queue building somewhere on the path
// (socket buffers, a throttling middlebox, the relay). It steers the
// window towards rate x (base + target): each acknowledged piece of n
// bytes moves it by n x ((base + target) / rtt - 1), at most +n (so it
// at most doubles per round trip while the path has room) and
// proportionally down when the queue exceeds the target. So a transfer
// fills the path but keeps the queue ahead of other traffic near the
// target: a text sent during an upload waits about that long, not for
// megabytes of socket buffer. Pieces are small (4 or 16 KiB, within one
// channel record) while the window is small, so that on a slow link a
// text waits for at most one of them.
type pacer struct {
	window int           // bytes allowed in flight
	base   time.Duration // smallest round trip seen
	target time.Duration // the queueing delay aimed at
}

const (
	paceTarget     = 25 * time.Millisecond
	paceTinyPiece  = 4 << 10
	paceSmallPiece = 16 << 10
	paceLargePiece = 64 << 10
	paceMinWindow  = paceTinyPiece
	paceMaxWindow  = 16 << 20
)

func newPacer() pacer { return pacer{window: 4 * paceSmallPiece, target: paceTarget} }

// piece is the size of the next request.
func (p *pacer) piece() int {
	if p.window < 4*paceSmallPiece {
		return paceTinyPiece
	}
	if p.window < 8*paceLargePiece {
		return paceSmallPiece
	}
	return paceLargePiece
}

// sample feeds the round trip of a piece of n bytes.
func (p *pacer) sample(rtt time.Duration, n int) {
	rtt = max(rtt, time.Microsecond)
	if p.base == 0 || rtt < p.base {
		p.base = rtt
	}
	ratio := float64(p.base+p.target) / float64(rtt)
	delta := min(float64(n)*(ratio-1), float64(n))
	p.window = min(max(p.window+int(delta), paceMinWindow), paceMaxWindow)
}
