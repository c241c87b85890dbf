package ferry

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/clienttest"
	"github.com/ferry-im/ferry/internal/inbox"
	"github.com/ferry-im/ferry/relay"
)

// notices returns the texts of c's notices with code.
func notices(t *testing.T, c *Client, code NoticeCode) []string {
	t.Helper()
	ms, err := c.Messages(context.Background(), Query{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		if n, ok := m.Body.(*Notice); ok && n.Code == code {
			out = append(out, n.Text)
		}
	}
	return out
}

// TestReregisterAfterRelayForgets: the relay's store forgets alice's
// mailbox (as a relay recovered onto an empty database, or one that
// cleaned up an idle mailbox, would). bob's message to her fails for good;
// alice's next sync finds the mailbox gone (GetPrekeyCount answers
// NotFound), registers it again (token, contacts' tokens, prekeys), tells
// her once in a notice, and bob's next message arrives. Before the fix
// she never registered again and every message to her failed.
func TestReregisterAfterRelayForgets(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.pair(t)
	alice.with(inbox.Options{Prekeys: prekeysPolicyEvery(time.Minute)})
	ctx := context.Background()
	syncNow(t, alice)

	if n, err := w.relay.Faults.DeleteIdle(ctx, time.Now().Add(72*time.Hour)); err != nil || n == 0 {
		t.Fatalf("DeleteIdle = %d, %v; want the mailboxes gone", n, err)
	}
	if _, err := bob.Send(ctx, conv(t, bob, "alice"), "lost"); !errors.Is(err, ErrRefused) {
		t.Fatalf("bob's send to a forgotten mailbox: got %v, want ErrRefused", err)
	}
	w.Clock.Advance(2 * time.Minute)
	syncNow(t, alice)
	if got := notices(t, alice, NoticeRegistered); len(got) != 1 {
		t.Fatalf("alice has %d notices of registering again, want 1: %q", len(got), got)
	}
	send(t, bob, "alice", "after")
	syncNow(t, alice)
	// "after" waits for "lost", which never comes, until the hold timeout.
	w.Clock.Advance(3 * time.Minute)
	syncNow(t, alice)
	if got := show(unread(t, alice)); got != "[ferry:"+notices(t, alice, NoticeRegistered)[0]+" bob:after]" {
		t.Fatalf("alice got %s, want the notice and bob's message", got)
	}
	// Registered once: later syncs find the mailbox and say nothing more.
	w.Clock.Advance(3 * time.Minute)
	syncNow(t, alice)
	if got := notices(t, alice, NoticeRegistered); len(got) != 1 {
		t.Fatalf("after another sync alice has %d notices of registering again, want 1", len(got))
	}
}

// TestPrekeysRefilledWhenDrained: GetBundle calls by strangers drain
// alice's one-time prekeys at the relay without any introduction coming;
// her next sync asks the relay how many are left and uploads more. Before
// the fix they were replenished only when an introduction used them.
func TestPrekeysRefilledWhenDrained(t *testing.T) {
	h := clienttest.New(t)
	w := &world{Harness: h, relay: h.StartRelay(clienttest.RelayConfig{Limits: relay.Limits{BundleRate: 1000, BundleBurst: 1000}})}
	alice := w.client(t, "alice", nil).with(inbox.Options{Prekeys: prekeysPolicyEvery(time.Minute)})
	ctx := context.Background()
	kp, err := channel.GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	cn, err := alice.a.Dialer.Dial(ctx, alice.a.Relay, kp)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	for range 32 {
		b, err := cn.GetBundle(ctx, alice.a.Mailbox, alice.a.Token)
		if err != nil || b.OneTimeID == 0 {
			t.Fatalf("GetBundle: %+v, %v; want one with a one-time prekey", b, err)
		}
	}
	if n, k, _ := w.relay.Faults.PrekeyCounts(ctx, alice.a.Mailbox); n != 0 || k != 0 {
		t.Fatalf("after draining the relay has %d and %d one-time prekeys, want 0", n, k)
	}
	w.Clock.Advance(2 * time.Minute)
	syncNow(t, alice)
	if n, k, _ := w.relay.Faults.PrekeyCounts(ctx, alice.a.Mailbox); n != 32 || k != 32 {
		t.Fatalf("after alice's sync the relay has %d and %d one-time prekeys, want 32 each", n, k)
	}
	// Not asked again within CountEvery: a sync right after uploads nothing.
	for range 32 {
		if _, err := cn.GetBundle(ctx, alice.a.Mailbox, alice.a.Token); err != nil {
			t.Fatal(err)
		}
	}
	syncNow(t, alice)
	if n, _, _ := w.relay.Faults.PrekeyCounts(ctx, alice.a.Mailbox); n != 0 {
		t.Fatalf("a sync within CountEvery refilled (%d left), want it to wait", n)
	}
}
