package ferry

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestDrainBoundedWithoutOK checks that a drain against a relay that never
// answers Subscribe ends with ErrUnreachable after the stall limit or the
// overall limit, whichever comes first, keeping what it received.
func TestDrainBoundedWithoutOK(t *testing.T) {
	for _, tc := range []struct {
		name            string
		stall, maxDrain time.Duration
	}{
		{"stall", 200 * time.Millisecond, time.Minute},
		{"overall", time.Minute, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			r := newFakeRelay()
			defer r.close()
			alice, bob := pair(t, r)
			if _, err := bob.Send(ctx, "alice", "before the silence"); err != nil {
				t.Fatal(err)
			}
			alice.cfg.drainStall, alice.cfg.maxDrain = tc.stall, tc.maxDrain
			r.mu.Lock()
			r.withholdOK = true
			r.mu.Unlock()
			start := time.Now()
			err := alice.Sync(ctx, SyncOptions{})
			if !errors.Is(err, ErrUnreachable) {
				t.Fatalf("Sync against a relay that never answers Subscribe: %v, want ErrUnreachable", err)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Fatalf("Sync took %v", d)
			}
			ms, err := alice.Messages(ctx, Query{Unread: true})
			if err != nil || len(ms) != 1 || ms[0].Text != "before the silence" {
				t.Fatalf("alice has %q (%v), want the message pushed before the silence", texts(ms), err)
			}
		})
	}
}
