package ferry

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/ferry-im/ferry/internal/prekeys"
)

// TestClientRotatesPrekeys checks that a sync after the rotation period
// uploads a new signed prekey and last-resort ML-KEM prekey, that an
// introduction made with the old bundle (in flight across the rotation)
// still sets up a session, and that one made with the new bundle does too.
func TestClientRotatesPrekeys(t *testing.T) {
	ctx := context.Background()
	const rotation = 7 * 24 * time.Hour
	w := newWorld(t)
	alice := w.client(t, "alice", nil)
	bob, carol := w.client(t, "bob", nil), w.client(t, "carol", nil)
	uploaded := func() (signed, last []byte) {
		s, l, _, _ := w.relay.Faults.Uploaded(alice.a.Mailbox)
		return s, l
	}
	signed0, last0 := uploaded()
	if signed0 == nil || last0 == nil {
		t.Fatal("Init uploaded no signed or last-resort prekey")
	}
	w.Clock.Advance(rotation - time.Minute)
	syncNow(t, alice)
	if s, l := uploaded(); !bytes.Equal(s, signed0) || !bytes.Equal(l, last0) {
		t.Fatal("prekeys rotated before the rotation period")
	}
	inv, err := alice.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// carol's introduction uses the old bundle and waits at the relay.
	if _, err := carol.Accept(ctx, inv); err != nil {
		t.Fatal(err)
	}
	w.Clock.Advance(2 * time.Minute)
	var added []string
	onContact := func(k Contact) { added = append(added, k.Name) }
	if err := alice.Sync(ctx, SyncOptions{OnContact: onContact}); err != nil {
		t.Fatal(err)
	}
	signed1, last1 := uploaded()
	if bytes.Equal(signed1, signed0) || bytes.Equal(last1, last0) {
		t.Fatal("a sync after the rotation period uploaded no new signed or last-resort prekey")
	}
	if id := prekeys.RecordID; id(signed1) <= id(signed0) || id(last1) <= id(last0) {
		t.Fatalf("new prekey ids %d, %d not above the old %d, %d", id(signed1), id(last1), id(signed0), id(last0))
	}
	if len(added) != 1 || added[0] != "carol" {
		t.Fatalf("after the rotation alice added %q, want carol (old bundle, in flight)", added)
	}
	inv2, err := alice.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Accept(ctx, inv2); err != nil {
		t.Fatal(err)
	}
	added = nil
	if err := alice.Sync(ctx, SyncOptions{OnContact: onContact}); err != nil {
		t.Fatal(err)
	}
	if len(added) != 1 || added[0] != "bob" {
		t.Fatalf("alice added %q, want bob (new bundle)", added)
	}
	if s, l := uploaded(); !bytes.Equal(s, signed1) || !bytes.Equal(l, last1) {
		t.Fatal("prekeys rotated again within the rotation period")
	}
	// Both sessions work.
	for _, k := range []*Client{bob, carol} {
		send(t, k, "alice", "hi from "+k.Name())
	}
	syncNow(t, alice)
	if got := show(unread(t, alice)); got != "[ferry:carol accepted your invite and is now a contact. Compare your safety numbers with carol over another channel to be sure it is them. "+
		"ferry:bob accepted your invite and is now a contact. Compare your safety numbers with bob over another channel to be sure it is them. bob:hi from bob carol:hi from carol]" {
		t.Fatalf("alice got %s, want a message from each", got)
	}
}
