package relay

import (
	"slices"
	"sync"
)

// ackWindow bounds what a connection's Acks can make the store do. An Ack
// names seqs delivered on the same connection (docs/protocol.md 6.4), so
// the relay drops the seqs outside the range delivered on it so far and
// keeps at most as many as it delivered there and were not acknowledged
// yet. A connection that was delivered nothing costs the store nothing,
// however many made-up seqs it acknowledges; one that was delivered n
// envelopes, each sent to it by somebody, costs at most n seqs of work.
type ackWindow struct {
	// mu protects the fields below (the push goroutine records
	// deliveries, the handler goroutine takes acks).
	mu     sync.Mutex
	lo, hi uint64 // the lowest and highest seq delivered (0: none yet)
	owed   int    // deliveries not yet matched by an acknowledged seq
}

// delivered records that envs are about to be delivered on the connection.
func (w *ackWindow) delivered(envs []Envelope) {
	if len(envs) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, env := range envs {
		if w.lo == 0 || env.Seq < w.lo {
			w.lo = env.Seq
		}
		w.hi = max(w.hi, env.Seq)
	}
	w.owed += len(envs)
}

// take returns the seqs of an Ack that can have been delivered on the
// connection, each once, in a new slice, and counts them as acknowledged.
func (w *ackWindow) take(seqs []uint64) []uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.owed == 0 {
		return nil
	}
	var out []uint64
	for _, q := range seqs {
		if q >= w.lo && q <= w.hi {
			out = append(out, q)
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	out = out[:min(len(out), w.owed)]
	w.owed -= len(out)
	return out
}
