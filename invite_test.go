package ferry

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferry-im/ferry/link"
)

// TestClientInviteExpires checks that an invite introduces nobody once
// InviteTTL has passed since Invite, and still works just before; the
// late invitee is told.
func TestClientInviteExpires(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob, carol := w.client(t, "alice", nil), w.client(t, "bob", nil), w.client(t, "carol", nil)
	old, err := alice.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.Clock.Advance(time.Hour)
	fresh, err := alice.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.Clock.Advance(InviteTTL - time.Minute) // old is past its TTL, fresh is not
	if _, err := bob.Accept(ctx, old); err != nil {
		t.Fatal(err) // bob cannot know the invite expired
	}
	if _, err := carol.Accept(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	var added []string
	if err := alice.Sync(ctx, SyncOptions{OnContact: func(k Contact) { added = append(added, k.Name) }}); err != nil {
		t.Fatal(err)
	}
	ks, err := alice.Contacts(ctx)
	if err != nil || len(ks) != 1 || ks[0].Name != "carol" || len(added) != 1 {
		t.Fatalf("alice's contacts: got %+v (%v), added %q; want only carol", ks, err, added)
	}
	refused(t, bob, "alice", "the invite had expired")
}

// refused checks that c, after a sync, has its contact named name refused
// and was told why.
func refused(t *testing.T, c *Client, name, why string) {
	t.Helper()
	syncNow(t, c)
	if k, _ := c.FindContact(context.Background(), name); k.Status != ContactRefused {
		t.Fatalf("%s's %s is %v, want refused", c.Name(), name, k.Status)
	}
	if got := show(unread(t, c)); !strings.Contains(got, why) {
		t.Fatalf("%s was told %s", c.Name(), got)
	}
}

// invited makes alice and bob, and an invite of alice's.
func invited(t *testing.T, w *world) (alice, bob *Client, inv string) {
	t.Helper()
	alice, bob = w.client(t, "alice", nil), w.client(t, "bob", nil)
	inv, err := alice.Invite(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return alice, bob, inv
}

// TestClientInviteReuse is what a new user ran into: a second use of an
// invite looked accepted, and every message to that contact stayed "sent"
// forever. Now the inviter refuses it and is told in a notice of its own
// kind (not a message from the first contact, who could forge one), and
// the late invitee learns it: the contact is refused, what it sent failed,
// and sending more is an error.
func TestClientInviteReuse(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice := w.client(t, "alice", nil)
	mallory, bob := w.client(t, "mallory", nil), w.client(t, "bob", nil)
	inv, err := alice.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.Accept(ctx, inv); err != nil {
		t.Fatal(err)
	}
	syncNow(t, alice)
	if err := alice.MarkShown(ctx, unread(t, alice)); err != nil {
		t.Fatal(err)
	}
	k, err := bob.Accept(ctx, inv)
	if err != nil {
		t.Fatal(err) // bob cannot know yet
	}
	sent, err := bob.Send(ctx, k.Conversation, "hi alice, it's bob")
	if err != nil || sent.State != StateSent {
		t.Fatalf("bob's first message: %v, %v", sent, err)
	}
	var changed []Contact
	syncNow(t, alice)
	if ks, err := alice.Contacts(ctx); err != nil || len(ks) != 1 || ks[0].Name != "mallory" {
		t.Fatalf("alice's contacts: got %+v (%v), want only mallory", ks, err)
	}
	got := unread(t, alice)
	if len(got) != 1 || got[0].Kind != KindNotice || got[0].From != "" || got[0].Sender != 0 ||
		got[0].ConversationName != "mallory" || got[0].Body.(*Notice).Code != NoticeInviteReused ||
		!strings.Contains(got[0].Text(), `"bob"`) || !strings.Contains(got[0].Text(), "safety numbers with mallory") {
		t.Fatalf("alice was told %s, want one notice about bob in mallory's conversation", show(got))
	}
	if err := bob.Sync(ctx, SyncOptions{OnContact: func(k Contact) { changed = append(changed, k) }}); err != nil {
		t.Fatal(err)
	}
	if len(changed) != 1 || changed[0].Status != ContactRefused {
		t.Fatalf("bob's contact changes: %+v, want alice refused", changed)
	}
	hist, _ := bob.Messages(ctx, Query{Conversation: k.Conversation})
	if len(hist) != 2 || hist[0].State != StateFailed || hist[1].Kind != KindNotice ||
		!strings.Contains(hist[1].Text(), "someone else had already used the invite") {
		t.Fatalf("bob's conversation: %s (%v)", show(hist), hist[0].State)
	}
	if _, err := bob.Send(ctx, k.Conversation, "anyone?"); err == nil || !strings.Contains(err.Error(), "ask alice for a new invite") {
		t.Fatalf("sending to a refusing contact: got %v", err)
	}
	// mallory is confirmed: alice answered her introduction.
	syncNow(t, mallory)
	if k, _ := mallory.FindContact(ctx, "alice"); k.Status != ContactConfirmed {
		t.Fatalf("mallory's alice is %v, want confirmed", k.Status)
	}
}

// TestClientAlteredInvite: an invite whose secret was changed (never
// issued) is refused too.
func TestClientAlteredInvite(t *testing.T) {
	ctx := context.Background()
	alice, bob, inv := invited(t, newWorld(t))
	i, err := link.ParseInvite(inv)
	if err != nil {
		t.Fatal(err)
	}
	i.Secret[9] ^= 1
	if _, err := bob.Accept(ctx, i.String()); err != nil {
		t.Fatal(err)
	}
	syncNow(t, alice)
	refused(t, bob, "alice", "never made that invite")
}

// TestClientNewContactNotice: the inviter is told, in the new
// conversation, that someone accepted the invite (a new user saw the
// contact appear without a word).
func TestClientNewContactNotice(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.client(t, "alice", nil), w.client(t, "bob", nil)
	introduce(t, alice, bob)
	got := unread(t, alice)
	if len(got) != 1 || got[0].Kind != KindNotice || got[0].Body.(*Notice).Code != NoticeNewContact ||
		got[0].ConversationName != "bob" || !strings.HasPrefix(got[0].Text(), "bob accepted your invite") {
		t.Fatalf("alice was told %s", show(got))
	}
	convs, err := alice.Conversations(context.Background())
	if err != nil || len(convs) != 1 || convs[0].Unread != 1 || convs[0].Name != "bob" {
		t.Fatalf("alice's conversations: %+v (%v), want bob with one unread", convs, err)
	}
}

func TestClientInviteOnce(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob := w.pair(t)
	inv, err := alice.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Accept(ctx, inv); !errors.Is(err, ErrOwnInvite) {
		t.Fatalf("accepting own invite: got %v", err)
	}
	if _, err := bob.Accept(ctx, inv); err == nil || !strings.Contains(err.Error(), "already your contact") {
		t.Fatalf("accepting a second invite from a contact: got %v", err)
	}
}
