package ferry

import (
	"context"
	"testing"
	"time"
)

// TestReceiptsBatchedAndDelayed: alice's delivery receipts are not sent
// when bob's messages arrive but once the batch's delay is over (5 s
// here, by her clock), as one receipt for every message that arrived
// meanwhile. Before the change each sync sent a receipt at once, so the
// relay could link the delivery to alice's answer within 100 ms.
func TestReceiptsBatchedAndDelayed(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.pair(t)
	ctx := context.Background()
	alice.a.ReceiptDelay = func() time.Duration { return 5 * time.Second }
	waiting := func() int {
		t.Helper()
		u, err := w.relay.Faults.Usage(ctx, bob.a.Mailbox)
		if err != nil {
			t.Fatal(err)
		}
		return u.Count
	}
	syncNow(t, bob) // bob's mailbox is empty
	send(t, bob, "alice", "1", "2")
	syncNow(t, alice)
	if n := waiting(); n != 0 {
		t.Fatalf("right after alice's sync bob's mailbox holds %d envelopes, want 0 (the receipt waits)", n)
	}
	w.Clock.Advance(3 * time.Second)
	send(t, bob, "alice", "3")
	syncNow(t, alice) // "3" joins the batch, which is due 5 s after "1" and "2" came
	if n := waiting(); n != 0 {
		t.Fatalf("3 s after, bob's mailbox holds %d envelopes, want 0", n)
	}
	w.Clock.Advance(2 * time.Second)
	if _, err := alice.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := waiting(); n != 1 {
		t.Fatalf("once the delay is over bob's mailbox holds %d envelopes, want 1 receipt for all three", n)
	}
	syncNow(t, bob)
	hist, err := bob.Messages(ctx, Query{Conversation: conv(t, bob, "alice")})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range hist {
		if m.Outgoing && m.State != StateDelivered {
			t.Fatalf("bob's %q is %v, want delivered", m.Text(), m.State)
		}
	}
}
