package ferry

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferry-im/ferry/internal/inbox"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/session"
)

// flipSign returns an invite link like inv with the x sign bit of its
// identity flipped: the other encoding of the same key (review L3).
func flipSign(t *testing.T, inv string) string {
	t.Helper()
	i, err := link.ParseInvite(inv)
	if err != nil {
		t.Fatal(err)
	}
	i.Identity[31] ^= 0x80
	return i.String()
}

// TestClientSignFlippedIdentity: a key and its sign-flipped encoding
// authenticate alike in PQXDH and sealed sender, so the client treats them
// as one identity: a message sealed under the flipped encoding of a
// contact's key comes from that contact, not from a new one, and an invite
// carrying the flipped encoding is the user's own or a contact's.
func TestClientSignFlippedIdentity(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice := w.client(t, "alice", nil)
	var flip atomic.Bool
	bob := w.client(t, "bob", nil).with(inbox.Options{
		Open: func(id *session.Identity, env []byte) (session.PublicIdentity, byte, []byte, error) {
			// The sealed sender as a sender presenting -A would send it:
			// it authenticates by the same X25519 key.
			sender, ct, inner, err := session.Open(id, env)
			if err == nil && flip.Load() {
				sender[31] ^= 0x80
			}
			return sender, ct, inner, err
		},
	})
	inv, err := bob.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Accept(ctx, flipSign(t, inv)); !errors.Is(err, ErrOwnInvite) {
		t.Fatalf("accepting own invite with the flipped identity: got %v, want ErrOwnInvite", err)
	}
	if _, err := alice.Accept(ctx, inv); err != nil {
		t.Fatal(err)
	}
	syncNow(t, bob)
	flip.Store(true)
	send(t, alice, "bob", "from -A")
	syncNow(t, bob)
	ks, err := bob.Contacts(ctx)
	if err != nil || len(ks) != 1 || ks[0].Name != "alice" {
		t.Fatalf("bob's contacts: got %+v (%v), want only alice", ks, err)
	}
	ms, err := bob.Messages(ctx, Query{Conversation: ks[0].Conversation, After: 1})
	if err != nil || show(ms) != "[alice:from -A]" {
		t.Fatalf("bob's messages from alice: got %s (%v)", show(ms), err)
	}
	inv2, err := alice.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Accept(ctx, flipSign(t, inv2)); err == nil || !strings.Contains(err.Error(), "already your contact") {
		t.Fatalf("accepting a contact's invite with the flipped identity: got %v", err)
	}
}
