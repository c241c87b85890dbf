package ferry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
)

func newTestClient(t *testing.T, r *fakeRelay, name string) *Client {
	t.Helper()
	c, err := Init(context.Background(), Config{Home: t.TempDir(), dial: r.dial}, r.link.String(), name)
	if err != nil {
		t.Fatalf("Init %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pair makes alice and bob contacts of each other through r.
func pair(t *testing.T, r *fakeRelay) (alice, bob *Client) {
	t.Helper()
	ctx := context.Background()
	alice, bob = newTestClient(t, r, "alice"), newTestClient(t, r, "bob")
	inv, err := alice.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	name, err := bob.Accept(ctx, inv)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if name != "alice" {
		t.Fatalf("Accept: got name %q, want alice", name)
	}
	var added []string
	if err := alice.Sync(ctx, SyncOptions{OnContact: func(n string) { added = append(added, n) }}); err != nil {
		t.Fatalf("alice Sync: %v", err)
	}
	if len(added) != 1 || added[0] != "bob" {
		t.Fatalf("alice learned contacts %q, want [bob]", added)
	}
	return alice, bob
}

func texts(ms []*Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Contact+":"+m.Text)
	}
	return out
}

func TestClientConversation(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	alice, bob := pair(t, r)

	m, err := bob.Send(ctx, "alice", "hello alice")
	if err != nil {
		t.Fatalf("bob Send: %v", err)
	}
	if m.State != StateSent {
		t.Fatalf("state after Send: got %v, want sent", m.State)
	}
	if _, err := alice.Send(ctx, "bob", "hello bob"); err != nil {
		t.Fatalf("alice Send: %v", err)
	}
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	unread, err := alice.Messages(ctx, Query{Unread: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(texts(unread)); got != "[bob:hello alice]" {
		t.Fatalf("alice unread: got %s", got)
	}
	if err := alice.MarkShown(ctx, unread); err != nil {
		t.Fatal(err)
	}
	if again, _ := alice.Messages(ctx, Query{Unread: true}); len(again) != 0 {
		t.Fatalf("unread after MarkShown: got %d, want 0", len(again))
	}
	// bob gets alice's message and the delivery and read receipts.
	if err := bob.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	hist, err := bob.Messages(ctx, Query{Contact: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Text != "hello alice" || hist[1].Text != "hello bob" {
		t.Fatalf("bob history: got %q", texts(hist))
	}
	if hist[0].State != StateRead {
		t.Fatalf("bob's message state: got %v, want read", hist[0].State)
	}
	// alice receives bob's delivery receipt for "hello bob".
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	ah, _ := alice.Messages(ctx, Query{Contact: "bob"})
	for _, m := range ah {
		if m.Outgoing && m.State != StateDelivered {
			t.Fatalf("alice's message state: got %v, want delivered", m.State)
		}
	}
	if n := r.pendingAfterAcks(alice.mailbox, bob.mailbox); n != 0 {
		t.Fatalf("relay still holds %d envelopes after both synced", n)
	}
	sa, err := alice.SafetyNumber(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := bob.SafetyNumber(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if sa != sb || len(strings.ReplaceAll(sa, " ", "")) != 60 {
		t.Fatalf("safety numbers: alice sees %q, bob sees %q; want the same 60 digits", sa, sb)
	}
}

func TestClientOutboxSurvivesOutage(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	alice, bob := pair(t, r)
	r.setDown(true)
	for i := range 3 {
		if _, err := bob.Send(ctx, "alice", fmt.Sprint("queued ", i)); !errors.Is(err, ErrQueued) {
			t.Fatalf("Send with relay down: got %v, want ErrQueued", err)
		}
	}
	if err := alice.Sync(ctx, SyncOptions{}); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Sync with relay down: got %v, want ErrUnreachable", err)
	}
	// A restarted client (new process) still has the outbox.
	home := bob.cfg.Home
	bob.Close()
	bob2, err := Open(ctx, Config{Home: home, dial: r.dial})
	if err != nil {
		t.Fatal(err)
	}
	defer bob2.Close()
	r.setDown(false)
	left, err := bob2.Flush(ctx)
	if err != nil || left != 0 {
		t.Fatalf("Flush: %d left, %v", left, err)
	}
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _ := alice.Messages(ctx, Query{Unread: true})
	if fmt.Sprint(texts(got)) != "[bob:queued 0 bob:queued 1 bob:queued 2]" {
		t.Fatalf("alice got %q", texts(got))
	}
}

func TestClientDeduplicates(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	alice, bob := pair(t, r)
	if _, err := bob.Send(ctx, "alice", "once"); err != nil {
		t.Fatal(err)
	}
	// The relay delivers the same envelope twice (as after a crash
	// before the Ack), once more under a new sequence number.
	r.mu.Lock()
	d := r.box(alice.mailbox).queue[0]
	r.mu.Unlock()
	d.Seq = 99
	r.inject(alice.mailbox, d)
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	r.inject(alice.mailbox, d)
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _ := alice.Messages(ctx, Query{})
	if len(got) != 1 {
		t.Fatalf("got %d messages, want 1: %q", len(got), texts(got))
	}
	if n := r.pendingAfterAcks(alice.mailbox); n != 0 {
		t.Fatalf("duplicates not acknowledged: %d left", n)
	}
}

func TestClientInviteIsOneTime(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	alice := newTestClient(t, r, "alice")
	bob := newTestClient(t, r, "bob")
	carol := newTestClient(t, r, "carol")
	inv, _ := alice.Invite(ctx)
	if _, err := bob.Accept(ctx, inv); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.Accept(ctx, inv); err != nil {
		t.Fatal(err) // carol cannot know the invite is used
	}
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	ks, _ := alice.Contacts(ctx)
	if len(ks) != 1 || ks[0].Name != "bob" {
		t.Fatalf("alice's contacts: got %+v, want only bob", ks)
	}
	if _, err := alice.Accept(ctx, inv); !errors.Is(err, ErrOwnInvite) {
		t.Fatalf("accepting own invite: got %v", err)
	}
	inv2, _ := alice.Invite(ctx)
	if _, err := bob.Accept(ctx, inv2); err == nil || !strings.Contains(err.Error(), "already your contact") {
		t.Fatalf("accepting a second invite from a contact: got %v", err)
	}
}

func TestClientBadInput(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	alice := newTestClient(t, r, "alice")
	if _, err := alice.Send(ctx, "nobody", "hi"); !errors.Is(err, ErrUnknownContact) {
		t.Fatalf("Send to unknown: got %v", err)
	}
	if _, err := alice.Accept(ctx, "ferry://invite?garbage"); err == nil {
		t.Fatal("Accept of a malformed link succeeded")
	}
	if _, err := Init(ctx, Config{Home: t.TempDir(), dial: r.dial}, "not a link", "x"); err == nil {
		t.Fatal("Init with a malformed relay link succeeded")
	}
	if _, err := Init(ctx, Config{Home: alice.cfg.Home, dial: r.dial}, r.link.String(), "x"); !errors.Is(err, ErrExists) {
		t.Fatalf("Init over a profile: got %v, want ErrExists", err)
	}
	if _, err := Open(ctx, Config{Home: t.TempDir()}); !errors.Is(err, ErrNoProfile) {
		t.Fatalf("Open empty: got %v, want ErrNoProfile", err)
	}
}

func TestClientSyncWaitReconnects(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	alice, bob := pair(t, r)
	got := make(chan string, 10)
	done := make(chan error, 1)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		done <- alice.Sync(sctx, SyncOptions{Wait: time.Minute, OnMessages: func(ms []*Message) {
			for _, m := range ms {
				got <- m.Text
			}
		}})
	}()
	for i, down := range []bool{false, true} {
		if down {
			r.setDown(true)
			time.Sleep(200 * time.Millisecond)
			r.setDown(false)
		}
		want := fmt.Sprint("message ", i)
		if _, err := bob.Send(ctx, "alice", want); err != nil {
			t.Fatal(err)
		}
		select {
		case s := <-got:
			if s != want {
				t.Fatalf("got %q, want %q", s, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%q never arrived (relay went down: %v)", want, down)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync after cancel: got %v, want context.Canceled", err)
	}
}

func TestClientPrekeysReplenish(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	alice, err := Init(ctx, Config{Home: t.TempDir(), dial: r.dial, prekeys: 4, minPrekeys: 2}, r.link.String(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	const n = 4 - 2 + 2
	for i := range n {
		b := newTestClient(t, r, fmt.Sprint("b", i))
		inv, _ := alice.Invite(ctx)
		if _, err := b.Accept(ctx, inv); err != nil {
			t.Fatal(err)
		}
	}
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	left := len(r.oneTime[alice.mailbox])
	r.mu.Unlock()
	if left < 2 {
		t.Fatalf("relay has %d one-time prekeys after replenishing, want at least 2", left)
	}
	ks, _ := alice.Contacts(ctx)
	if len(ks) != n {
		t.Fatalf("got %d contacts", len(ks))
	}
}

func TestClientRetriesBusyRelay(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	alice, bob := pair(t, r)
	r.mu.Lock()
	r.busy = 3
	r.mu.Unlock()
	if _, err := bob.SendMany(ctx, "alice", []string{"1", "2", "3", "4", "5"}); err != nil {
		t.Fatalf("SendMany through a busy relay: %v", err)
	}
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	// The relay stored 4 and 5 before 1, 2 and 3 (rejected, then
	// retried): alice holds 4 and 5 back and shows all five in order.
	got, _ := alice.Messages(ctx, Query{Unread: true})
	if fmt.Sprint(texts(got)) != "[bob:1 bob:2 bob:3 bob:4 bob:5]" {
		t.Fatalf("alice got %q, want 1..5 in order", texts(got))
	}
}

// TestClientHoldTimeout loses a message at the relay: the ones after it
// are held back, then shown once holdTimeout has passed.
func TestClientHoldTimeout(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	alice, err := Init(ctx, Config{Home: t.TempDir(), dial: r.dial, Now: clock}, r.link.String(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob := newTestClient(t, r, "bob")
	inv, _ := alice.Invite(ctx)
	if _, err := bob.Accept(ctx, inv); err != nil {
		t.Fatal(err)
	}
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendMany(ctx, "alice", []string{"1", "2", "3"}); err != nil {
		t.Fatal(err)
	}
	// The relay loses message 1 (the ratchet copes with the gap).
	r.mu.Lock()
	b := r.box(alice.mailbox)
	b.queue = b.queue[1:]
	r.mu.Unlock()
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := alice.Messages(ctx, Query{Unread: true}); len(got) != 0 {
		t.Fatalf("shown before the timeout: %q", texts(got))
	}
	mu.Lock()
	now = now.Add(holdTimeout + time.Second)
	mu.Unlock()
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _ := alice.Messages(ctx, Query{Unread: true})
	if fmt.Sprint(texts(got)) != "[bob:2 bob:3]" {
		t.Fatalf("after the timeout: got %q, want 2 and 3", texts(got))
	}
	// Later messages flow normally.
	if _, err := bob.Send(ctx, "alice", "4"); err != nil {
		t.Fatal(err)
	}
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _ = alice.Messages(ctx, Query{Unread: true})
	if fmt.Sprint(texts(got)) != "[bob:2 bob:3 bob:4]" {
		t.Fatalf("got %q", texts(got))
	}
}

// TestClientRetriesOutboxWhileWaiting puts alice and bob on different
// relays: with bob's relay down, alice's message waits in her outbox, and
// her waiting Sync (connected to her own relay) delivers it once bob's
// relay is back, without another Send.
func TestClientRetriesOutboxWhileWaiting(t *testing.T) {
	ctx := context.Background()
	ra, rb := newFakeRelay(), newFakeRelay()
	rb.link.Key = [32]byte{2}
	defer ra.close()
	defer rb.close()
	dial := func(ctx context.Context, l link.Relay, k channel.KeyPair) (frameConn, error) {
		if l.Key == rb.link.Key {
			return rb.dial(ctx, l, k)
		}
		return ra.dial(ctx, l, k)
	}
	alice, err := Init(ctx, Config{Home: t.TempDir(), dial: dial, outboxRetry: 100 * time.Millisecond}, ra.link.String(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := Init(ctx, Config{Home: t.TempDir(), dial: dial}, rb.link.String(), "bob")
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	inv, _ := alice.Invite(ctx)
	if _, err := bob.Accept(ctx, inv); err != nil {
		t.Fatal(err)
	}
	rb.setDown(true)
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, "bob", "through the outage"); !errors.Is(err, ErrQueued) {
		t.Fatalf("Send with bob's relay down: got %v, want ErrQueued", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	delivered := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		var once sync.Once
		done <- alice.Sync(sctx, SyncOptions{Wait: time.Minute, OnState: func() { once.Do(func() { close(delivered) }) }})
	}()
	time.Sleep(300 * time.Millisecond)
	rb.setDown(false)
	select {
	case <-delivered:
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting Sync never delivered the outbox")
	}
	cancel()
	<-done
	if err := bob.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _ := bob.Messages(ctx, Query{Unread: true})
	if len(got) != 1 || got[0].Text != "through the outage" {
		t.Fatalf("bob got %q", texts(got))
	}
}

// TestClientAnonymousConnections checks what the relay can learn from
// connections: sends come from keys that are not the sender's device key,
// one such key never sends to two recipients, and a cached connection that
// died with a relay restart does not fail the next Send.
func TestClientAnonymousConnections(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	alice, bob := pair(t, r)
	carol := newTestClient(t, r, "carol")
	inv, _ := carol.Invite(ctx)
	if _, err := alice.Accept(ctx, inv); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		for _, to := range []string{"bob", "carol"} {
			if _, err := alice.Send(ctx, to, fmt.Sprint("hi ", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	r.setDown(true)
	r.setDown(false)
	if _, err := alice.Send(ctx, "bob", "after a restart"); err != nil {
		t.Fatalf("Send after the relay restarted: %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for from, tos := range r.recipients {
		if from == alice.mailbox || from == bob.mailbox || from == carol.mailbox {
			t.Errorf("a device key was used to send")
		}
		if len(tos) > 1 {
			t.Errorf("one anonymous key sent to %d mailboxes", len(tos))
		}
	}
}
