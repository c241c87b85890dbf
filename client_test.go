package ferry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferry-im/ferry/internal/clienttest"
	"github.com/ferry-im/ferry/internal/inbox"
)

func TestClientConversation(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob := w.pair(t)

	m, err := bob.Send(ctx, conv(t, bob, "alice"), "hello alice")
	if err != nil {
		t.Fatalf("bob Send: %v", err)
	}
	if m.State != StateSent || m.Kind != KindText || m.Text() != "hello alice" || !m.Outgoing {
		t.Fatalf("after Send: got %+v", m)
	}
	send(t, alice, "bob", "hello bob")
	syncNow(t, alice)
	got := unread(t, alice)
	if show(got) != "[bob:hello alice]" || got[0].ConversationName != "bob" || got[0].Sender != contactID(t, alice, "bob") {
		t.Fatalf("alice unread: got %s", show(got))
	}
	if err := alice.MarkShown(ctx, got); err != nil {
		t.Fatal(err)
	}
	if again := unread(t, alice); len(again) != 0 {
		t.Fatalf("unread after MarkShown: got %d, want 0", len(again))
	}
	// bob gets alice's message and the delivery and read receipts.
	syncNow(t, bob)
	hist, err := bob.Messages(ctx, Query{Conversation: conv(t, bob, "alice")})
	if err != nil {
		t.Fatal(err)
	}
	if show(hist) != "[me:hello alice alice:hello bob]" {
		t.Fatalf("bob history: got %s", show(hist))
	}
	if hist[0].State != StateRead {
		t.Fatalf("bob's message state: got %v, want read", hist[0].State)
	}
	// alice receives bob's delivery receipt for "hello bob".
	syncNow(t, alice)
	ah, _ := alice.Messages(ctx, Query{Conversation: conv(t, alice, "bob")})
	for _, m := range ah {
		if m.Outgoing && m.State != StateDelivered {
			t.Fatalf("alice's message state: got %v, want delivered", m.State)
		}
	}
	if n := w.relay.PendingSoon(alice.a.Mailbox, bob.a.Mailbox); n != 0 {
		t.Fatalf("relay still holds %d envelopes after both synced", n)
	}
	sa, err := alice.SafetyNumber(ctx, contactID(t, alice, "bob"))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := bob.SafetyNumber(ctx, contactID(t, bob, "alice"))
	if err != nil {
		t.Fatal(err)
	}
	if sa != sb || len(strings.ReplaceAll(sa, " ", "")) != 60 {
		t.Fatalf("safety numbers: alice sees %q, bob sees %q; want the same 60 digits", sa, sb)
	}
}

func TestClientOutboxSurvivesOutage(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob := w.pair(t)
	w.relay.Down()
	for i := range 3 {
		if _, err := bob.Send(ctx, conv(t, bob, "alice"), fmt.Sprint("queued ", i)); !errors.Is(err, ErrQueued) {
			t.Fatalf("Send with relay down: got %v, want ErrQueued", err)
		}
	}
	if err := alice.Sync(ctx, SyncOptions{}); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Sync with relay down: got %v, want ErrUnreachable", err)
	}
	// A restarted client (new process) still has the outbox.
	home := bob.cfg.Home
	bob.Close()
	bob2, err := Open(ctx, Config{Home: home, Transports: w.Transports()})
	if err != nil {
		t.Fatal(err)
	}
	defer bob2.Close()
	if n, err := bob2.Queued(ctx); err != nil || n != 3 {
		t.Fatalf("Queued after reopening: %d, %v", n, err)
	}
	w.relay.Up()
	left, err := bob2.Flush(ctx)
	if err != nil || left != 0 {
		t.Fatalf("Flush: %d left, %v", left, err)
	}
	syncNow(t, alice)
	if got := show(unread(t, alice)); got != "[bob:queued 0 bob:queued 1 bob:queued 2]" {
		t.Fatalf("alice got %s", got)
	}
}

// TestClientDeduplicates has the relay deliver the same envelope again, as
// after a crash between storing and acknowledging it: it is stored once.
func TestClientDeduplicates(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.pair(t)
	send(t, bob, "alice", "once")
	w.relay.Faults.DropAcks.Store(true)
	syncNow(t, alice)
	syncNow(t, alice) // the relay delivers it again: nothing was acknowledged
	w.relay.Faults.DropAcks.Store(false)
	syncNow(t, alice)
	got, _ := alice.Messages(context.Background(), Query{Conversation: conv(t, alice, "bob"), After: 1})
	if show(got) != "[bob:once]" {
		t.Fatalf("got %s, want it once", show(got))
	}
	if n := w.relay.PendingSoon(alice.a.Mailbox); n != 0 {
		t.Fatalf("duplicates not acknowledged: %d left", n)
	}
}

func TestClientBadInput(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice := w.client(t, "alice", nil)
	if _, err := alice.Send(ctx, 99, "hi"); !errors.Is(err, ErrUnknownContact) {
		t.Fatalf("Send to an unknown conversation: got %v", err)
	}
	if _, err := alice.FindConversation(ctx, "nobody"); !errors.Is(err, ErrUnknownContact) {
		t.Fatalf("FindConversation of nobody: got %v", err)
	}
	if _, err := alice.Accept(ctx, "ferry://invite?garbage"); err == nil {
		t.Fatal("Accept of a malformed link succeeded")
	}
	if _, err := Init(ctx, w.config(t, "x"), "not a link", "x"); err == nil {
		t.Fatal("Init with a malformed relay link succeeded")
	}
	if _, err := Init(ctx, Config{Home: alice.cfg.Home, Transports: w.Transports()}, w.relay.Link.String(), "x"); !errors.Is(err, ErrExists) {
		t.Fatalf("Init over a profile: got %v, want ErrExists", err)
	}
	if _, err := Open(ctx, Config{Home: t.TempDir()}); !errors.Is(err, ErrNoProfile) {
		t.Fatalf("Open empty: got %v, want ErrNoProfile", err)
	}
}

// TestClientEmptyMessage: an empty or blank message is refused and
// nothing is queued (a new user sent one by mistake).
func TestClientEmptyMessage(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	_, bob := w.pair(t)
	for _, text := range []string{"", " \n\t"} {
		if _, err := bob.Send(ctx, conv(t, bob, "alice"), text); !errors.Is(err, ErrEmpty) {
			t.Fatalf("Send(%q): got %v, want ErrEmpty", text, err)
		}
	}
	if ms, _ := bob.Messages(ctx, Query{}); len(ms) != 0 {
		t.Fatalf("bob's history holds %s", show(ms))
	}
}

func TestClientSyncWaitReconnects(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob := w.pair(t)
	got := make(chan string, 10)
	done := make(chan error, 1)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		done <- alice.Sync(sctx, SyncOptions{Wait: time.Minute, OnMessages: func(ms []*Message) {
			for _, m := range ms {
				got <- m.Text()
			}
		}})
	}()
	for i, down := range []bool{false, true} {
		if down {
			w.relay.Down()
			time.Sleep(200 * time.Millisecond)
			w.relay.Up()
		}
		want := fmt.Sprint("message ", i)
		send(t, bob, "alice", want)
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

// TestClientRetriesBusyRelay: the relay refuses 1, 2 and 3 for a moment
// and stores 4 and 5; the client retries 1-3, and alice holds 4 and 5 back
// to show all five in order.
func TestClientRetriesBusyRelay(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.pair(t)
	w.relay.Faults.FailPuts.Store(3)
	send(t, bob, "alice", "1", "2", "3", "4", "5")
	syncNow(t, alice)
	if got := show(unread(t, alice)); got != "[bob:1 bob:2 bob:3 bob:4 bob:5]" {
		t.Fatalf("alice got %s, want 1..5 in order", got)
	}
}

// TestClientHoldTimeout loses a message at the relay: the ones after it
// are held back, then shown once the hold timeout has passed.
func TestClientHoldTimeout(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.pair(t)
	send(t, bob, "alice", "1", "2", "3")
	// The relay loses message 1 (the ratchet copes with the gap).
	envs := w.relay.Take(alice.a.Mailbox)
	for _, e := range envs[1:] {
		e.ID[0] ^= 0xff // a new relay id: the store remembers taken ones
		w.relay.Put(alice.a.Mailbox, e)
	}
	syncNow(t, alice)
	if got := unread(t, alice); len(got) != 0 {
		t.Fatalf("shown before the timeout: %s", show(got))
	}
	w.Clock.Advance(2*time.Minute + time.Second)
	syncNow(t, alice)
	if got := show(unread(t, alice)); got != "[bob:2 bob:3]" {
		t.Fatalf("after the timeout: got %s, want 2 and 3", got)
	}
	// Later messages flow normally.
	send(t, bob, "alice", "4")
	syncNow(t, alice)
	if got := show(unread(t, alice)); got != "[bob:2 bob:3 bob:4]" {
		t.Fatalf("got %s", got)
	}
}

// TestClientRetriesOutboxWhileWaiting puts alice and bob on different
// relays: with bob's relay down, alice's message waits in her outbox, and
// her waiting Sync (connected to her own relay) delivers it once bob's
// relay is back, without another Send.
func TestClientRetriesOutboxWhileWaiting(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	rb := w.StartRelay(clienttest.RelayConfig{})
	alice := w.client(t, "alice", nil).with(inbox.Options{OutboxRetry: 100 * time.Millisecond})
	bob := w.client(t, "bob", rb)
	introduce(t, alice, bob)
	rb.Down()
	if _, err := alice.Send(ctx, conv(t, alice, "bob"), "through the outage"); !errors.Is(err, ErrQueued) {
		t.Fatalf("Send with bob's relay down: got %v, want ErrQueued", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	delivered := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- alice.Sync(sctx, SyncOptions{Wait: time.Minute, OnState: func() {
			select {
			case delivered <- struct{}{}:
			default:
			}
		}})
	}()
	time.Sleep(300 * time.Millisecond)
	rb.Up()
	select {
	case <-delivered:
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting Sync never delivered the outbox")
	}
	cancel()
	<-done
	syncNow(t, bob)
	if got := show(unread(t, bob)); got != "[alice:through the outage]" {
		t.Fatalf("bob got %s", got)
	}
}

// TestClientAnonymousConnections checks what the relay can learn from
// connections: sends come from keys that own no mailbox, one such key
// never sends to two recipients, and a kept connection that died with a
// relay restart does not fail the next Send.
func TestClientAnonymousConnections(t *testing.T) {
	w := newWorld(t)
	alice, _ := w.pair(t)
	carol := w.client(t, "carol", nil)
	introduce(t, carol, alice)
	for i := range 3 {
		for _, to := range []string{"bob", "carol"} {
			send(t, alice, to, fmt.Sprint("hi ", i))
		}
	}
	w.relay.Restart()
	send(t, alice, "bob", "after a restart")
	sends := 0
	for _, c := range w.relay.Faults.Conns() {
		if len(c.SentTo) > 0 && c.Owned != nil {
			t.Errorf("a mailbox owner's key was used to send")
		}
		if len(c.SentTo) > 1 {
			t.Errorf("one anonymous key sent to %d mailboxes", len(c.SentTo))
		}
		sends += len(c.SentTo)
	}
	if sends == 0 {
		t.Fatal("the relay recorded no sends: the test proves nothing")
	}
}

// TestClientPrekeysReplenish: when introductions leave fewer one-time
// prekeys than the policy's minimum, more are made and uploaded at once.
func TestClientPrekeysReplenish(t *testing.T) {
	w := newWorld(t)
	alice := w.client(t, "alice", nil)
	// Init made 32 of each kind; with a minimum of 32, the first
	// introduction leaves too few.
	alice.in = inbox.New(alice.a, alice.ob, inbox.Options{Prekeys: prekeysPolicy(4, 32)})
	_, _, oneTime, kem := w.relay.Faults.Uploaded(alice.a.Mailbox)
	if oneTime != 32 || kem != 32 {
		t.Fatalf("Init uploaded %d and %d one-time prekeys, want 32 each", oneTime, kem)
	}
	introduce(t, alice, w.client(t, "bob", nil))
	_, _, oneTime, kem = w.relay.Faults.Uploaded(alice.a.Mailbox)
	if oneTime != 36 || kem != 36 {
		t.Fatalf("after replenishing the relay got %d and %d one-time prekeys, want 36 each", oneTime, kem)
	}
}

// TestDrainGetsWholeBacklog checks that one Sync without Wait (what
// `ferry read` runs) stores every waiting message, however slowly the
// relay reads its store: the drain ends at the relay's answer to
// Subscribe, which follows the backlog (docs/protocol.md section 6.4), not
// after a quiet spell.
func TestDrainGetsWholeBacklog(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.pair(t)
	const n = 500 // about 8 of the relay's store pages
	lines := make([]string, n)
	for i := range lines {
		lines[i] = "message " + string(rune('a'+i%26))
	}
	send(t, bob, "alice", lines...)
	// Longer than a page takes to store, and longer than the quiet spells
	// after which a drain once gave up.
	w.relay.Faults.PendingDelay.Store(int64(400 * time.Millisecond))
	syncNow(t, alice)
	if got := unread(t, alice); len(got) != n {
		t.Fatalf("one drain stored %d of the %d waiting messages", len(got), n)
	}
}

// TestDrainBounded checks that a drain against a relay that goes silent in
// the middle of the backlog, or that delivers it too slowly, ends with
// ErrUnreachable after the stall limit or the overall limit, keeping what
// it received.
func TestDrainBounded(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  inbox.Options
		fault func(f *clienttest.Faults)
	}{
		{"stall", inbox.Options{DrainStall: 300 * time.Millisecond}, func(f *clienttest.Faults) { f.StallAfter.Store(1) }},
		{"overall", inbox.Options{MaxDrain: time.Second}, func(f *clienttest.Faults) { f.PendingDelay.Store(int64(400 * time.Millisecond)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t)
			alice, bob := w.pair(t)
			lines := make([]string, 300)
			for i := range lines {
				lines[i] = fmt.Sprint("before the silence ", i)
			}
			send(t, bob, "alice", lines...)
			alice.with(tc.opts)
			tc.fault(w.relay.Faults)
			start := time.Now()
			err := alice.Sync(ctx, SyncOptions{})
			if !errors.Is(err, ErrUnreachable) {
				t.Fatalf("Sync against a stalling relay: %v, want ErrUnreachable", err)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Fatalf("Sync took %v", d)
			}
			if got := unread(t, alice); len(got) == 0 || len(got) == len(lines) || got[0].Text() != lines[0] {
				t.Fatalf("alice kept %d messages, want the first pages and not all", len(got))
			}
		})
	}
}
