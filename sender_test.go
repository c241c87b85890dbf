package ferry

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/session"
)

// reseal opens env (sealed to to) and seals its inner message again under
// the identity by, with a new relay id.
func reseal(t *testing.T, to *Client, by *session.Identity, env relay.Envelope, n byte) relay.Envelope {
	t.Helper()
	_, ct, inner, err := session.Open(to.a.Identity, env.Data)
	if err != nil {
		t.Fatal(err)
	}
	if env.Data, err = session.Seal(rand.Reader, by, to.a.Identity.Public(), ct, inner); err != nil {
		t.Fatal(err)
	}
	env.ID = [16]byte{'f', 'o', 'r', 'g', 'e', 'd', n}
	return env
}

// again returns env with a new relay id, so the relay's store takes it
// once more (it remembers the ids of envelopes it has had).
func again(env relay.Envelope) relay.Envelope {
	env.ID[15] ^= 0xff
	return env
}

// profilePrekeys returns c's stored prekey set.
func profilePrekeys(t *testing.T, c *Client) []byte {
	t.Helper()
	var p *localstore.Profile
	if err := c.a.Store.Update(context.Background(), func(tx *localstore.Tx) (err error) { p, err = tx.Profile(); return }); err != nil {
		t.Fatal(err)
	}
	return p.Prekeys
}

// TestClientRejectsResealedIntroduction checks that an initial message
// sealed under an identity other than the one in its PQXDH handshake
// creates no contact and spends neither the invite nor a prekey.
func TestClientRejectsResealedIntroduction(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob, inv := invited(t, w)
	if _, err := bob.Accept(ctx, inv); err != nil {
		t.Fatal(err)
	}
	genuine := w.relay.Take(alice.a.Mailbox)
	if len(genuine) != 1 {
		t.Fatalf("alice's mailbox holds %d envelopes, want bob's introduction", len(genuine))
	}
	// mallory re-seals bob's introduction as her own.
	mallory, err := session.NewIdentity(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	w.relay.Put(alice.a.Mailbox, reseal(t, alice, mallory, genuine[0], 1))
	prekeys := profilePrekeys(t, alice)
	var added []Contact
	onContact := func(k Contact) { added = append(added, k) }
	if err := alice.Sync(ctx, SyncOptions{OnContact: onContact}); err != nil {
		t.Fatal(err)
	}
	if ks, err := alice.Contacts(ctx); err != nil || len(ks) != 0 || len(added) != 0 {
		t.Fatalf("after a re-sealed introduction alice has contacts %+v (%v), added %v; want none", ks, err, added)
	}
	if !bytes.Equal(profilePrekeys(t, alice), prekeys) {
		t.Fatal("a rejected introduction changed alice's prekeys")
	}
	if n := w.relay.PendingSoon(alice.a.Mailbox); n != 0 {
		t.Fatalf("%d envelopes left unacknowledged, want the forged one acknowledged", n)
	}
	// The invite is still good: bob's genuine introduction works.
	w.relay.Put(alice.a.Mailbox, again(genuine[0]))
	if err := alice.Sync(ctx, SyncOptions{OnContact: onContact}); err != nil {
		t.Fatal(err)
	}
	ks, err := alice.Contacts(ctx)
	if err != nil || len(ks) != 1 || ks[0].Name != "bob" || ks[0].Identity != bob.Identity() {
		t.Fatalf("after bob's genuine introduction alice has contacts %+v (%v), want bob with his identity", ks, err)
	}
}

// TestClientRejectsMessageResealedByContact checks that a contact cannot
// pass off another contact's messages as its own, nor get them shown as
// the other's: a message sealed by eve but made in bob's session with
// alice is dropped, and bob's session is untouched.
func TestClientRejectsMessageResealedByContact(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.pair(t)
	eve := w.client(t, "eve", nil)
	introduce(t, alice, eve)
	if err := alice.MarkShown(context.Background(), unread(t, alice)); err != nil {
		t.Fatal(err)
	}
	// Acks are not answered: alice's Sync may have returned before the
	// relay read her ack of eve's introduction, which Take would take too.
	if n := w.relay.PendingSoon(alice.a.Mailbox); n != 0 {
		t.Fatalf("%d envelopes left unacknowledged in alice's mailbox after her Sync", n)
	}
	send(t, bob, "alice", "from bob")
	genuine := w.relay.Take(alice.a.Mailbox)
	if len(genuine) != 1 {
		t.Fatalf("alice's mailbox holds %d envelopes, want bob's one message", len(genuine))
	}
	w.relay.Put(alice.a.Mailbox, reseal(t, alice, eve.a.Identity, genuine[0], 2))
	syncNow(t, alice)
	if ms := unread(t, alice); len(ms) != 0 {
		t.Fatalf("after eve re-sealed bob's message alice has %s, want nothing", show(ms))
	}
	w.relay.Put(alice.a.Mailbox, again(genuine[0]))
	syncNow(t, alice)
	if ms := unread(t, alice); show(ms) != "[bob:from bob]" {
		t.Fatalf("alice has %s, want bob's genuine message", show(ms))
	}
}
