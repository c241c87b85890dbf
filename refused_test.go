package ferry

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestSendRefusedForGoodFails: a relay that refuses a message for good
// (here: bob's relay no longer knows the delivery token alice holds) makes
// it failed, with a notice saying why, and it leaves the outbox; Send
// says it failed, not that it is kept in the outbox. A temporary refusal
// (TestClientRetriesBusyRelay, TestSendTemporaryRefusalStaysQueued) keeps
// it queued.
func TestSendRefusedForGoodFails(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.pair(t)
	ctx := context.Background()
	// bob's mailbox now accepts another token only.
	if err := w.relay.Faults.SetToken(ctx, bob.a.Mailbox, [32]byte{1}); err != nil {
		t.Fatal(err)
	}
	m, err := alice.Send(ctx, conv(t, alice, "bob"), "hello")
	if !errors.Is(err, ErrRefused) || errors.Is(err, ErrQueued) {
		t.Fatalf("Send: got %v, want ErrRefused", err)
	}
	if n, err := alice.Queued(ctx); err != nil || n != 0 {
		t.Fatalf("Queued = %d, %v; want 0 (a refused message leaves the outbox)", n, err)
	}
	hist, err := alice.Messages(ctx, Query{Conversation: conv(t, alice, "bob")})
	if err != nil {
		t.Fatal(err)
	}
	var state State = -1
	var notice string
	for _, h := range hist {
		if h.ID == m.ID {
			state = h.State
		}
		if n, ok := h.Body.(*Notice); ok && n.Code == NoticeUndelivered {
			notice = n.Text
		}
	}
	if state != StateFailed {
		t.Fatalf("the refused message is %v, want failed", state)
	}
	if !strings.Contains(notice, "failed") || !strings.Contains(notice, "delivery token") {
		t.Fatalf("notice %q, want one saying the message failed and why", notice)
	}
}

// TestSendTemporaryRefusalStaysQueued: a relay that is busy for longer
// than the outbox's retries leaves the message queued (ErrQueued), never
// failed.
func TestSendTemporaryRefusalStaysQueued(t *testing.T) {
	w := newWorld(t)
	alice, _ := w.pair(t)
	ctx := context.Background()
	w.relay.Faults.FailPuts.Store(100)
	m, err := alice.Send(ctx, conv(t, alice, "bob"), "hello")
	if !errors.Is(err, ErrQueued) || errors.Is(err, ErrRefused) {
		t.Fatalf("Send: got %v, want ErrQueued", err)
	}
	if m.State != StateQueued {
		t.Fatalf("state %v, want queued", m.State)
	}
	if n, err := alice.Queued(ctx); err != nil || n != 1 {
		t.Fatalf("Queued = %d, %v; want 1", n, err)
	}
}
