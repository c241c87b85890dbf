package account

import (
	"crypto/rand"
	"testing"
)

// TestReceiptDelayBounds: the default delay of a batch of receipts is
// between MinReceiptDelay and MaxReceiptDelay, and not always the same.
func TestReceiptDelayBounds(t *testing.T) {
	a := &Account{Rand: rand.Reader}
	seen := make(map[int64]bool)
	for range 1000 {
		d := a.receiptDelay()
		if d < MinReceiptDelay || d > MaxReceiptDelay {
			t.Fatalf("delay %v, want it within [%v, %v]", d, MinReceiptDelay, MaxReceiptDelay)
		}
		seen[int64(d/MinReceiptDelay)] = true
	}
	if len(seen) < 5 {
		t.Fatalf("1000 delays fell in %d of the 10 seconds, want them spread", len(seen))
	}
}
