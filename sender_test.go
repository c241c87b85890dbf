package ferry

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/session"
	"github.com/ferry-im/ferry/wire"
)

// takeEnvelopes removes and returns the envelopes waiting in mb.
func (r *fakeRelay) takeEnvelopes(mb [16]byte) []wire.Deliver {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.box(mb)
	out := b.queue
	b.queue = nil
	return out
}

// reseal opens d (sealed to to) and seals its inner message again under
// the identity by, with a new message id.
func reseal(t *testing.T, to *Client, by *session.Identity, d wire.Deliver, n byte) wire.Deliver {
	t.Helper()
	_, ct, inner, err := session.Open(to.identity, d.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	env, err := session.Seal(rand.Reader, by, to.identity.Public(), ct, inner)
	if err != nil {
		t.Fatal(err)
	}
	d.ID = [16]byte{'f', 'o', 'r', 'g', 'e', 'd', n}
	d.Envelope = env
	return d
}

// profilePrekeys returns c's stored prekey set.
func profilePrekeys(t *testing.T, c *Client) []byte {
	t.Helper()
	var p *localstore.Profile
	if err := c.store.Update(context.Background(), func(tx *localstore.Tx) (err error) { p, err = tx.Profile(); return }); err != nil {
		t.Fatal(err)
	}
	return p.Prekeys
}

// TestClientRejectsResealedIntroduction checks that an initial message
// sealed under an identity other than the one in its PQXDH handshake
// creates no contact and spends neither the invite nor a prekey.
func TestClientRejectsResealedIntroduction(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	alice, bob := newTestClient(t, r, "alice"), newTestClient(t, r, "bob")
	inv, err := alice.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Accept(ctx, inv); err != nil {
		t.Fatal(err)
	}
	genuine := r.takeEnvelopes(alice.mailbox)
	if len(genuine) != 1 || !session.IsInitialMessage(func() []byte {
		_, _, inner, _ := session.Open(alice.identity, genuine[0].Envelope)
		return inner
	}()) {
		t.Fatalf("alice's mailbox holds %d envelopes, want bob's one initial message", len(genuine))
	}
	// mallory re-seals bob's introduction as her own.
	mallory, err := session.NewIdentity(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r.inject(alice.mailbox, reseal(t, alice, mallory, genuine[0], 1))
	prekeys := profilePrekeys(t, alice)
	var added []string
	if err := alice.Sync(ctx, SyncOptions{OnContact: func(n string) { added = append(added, n) }}); err != nil {
		t.Fatal(err)
	}
	if ks, err := alice.Contacts(ctx); err != nil || len(ks) != 0 || len(added) != 0 {
		t.Fatalf("after a re-sealed introduction alice has contacts %+v (%v), added %q; want none", ks, err, added)
	}
	if !bytes.Equal(profilePrekeys(t, alice), prekeys) {
		t.Fatal("a rejected introduction changed alice's prekeys")
	}
	if n := r.pendingAfterAcks(alice.mailbox); n != 0 {
		t.Fatalf("%d envelopes left unacknowledged, want the forged one acknowledged", n)
	}
	// The invite is still good: bob's genuine introduction works.
	r.inject(alice.mailbox, genuine[0])
	if err := alice.Sync(ctx, SyncOptions{OnContact: func(n string) { added = append(added, n) }}); err != nil {
		t.Fatal(err)
	}
	ks, err := alice.Contacts(ctx)
	if err != nil || len(ks) != 1 || ks[0].Name != "bob" || ks[0].Identity != bob.identity.Public() {
		t.Fatalf("after bob's genuine introduction alice has contacts %+v (%v), want bob with his identity", ks, err)
	}
}

// TestClientRejectsMessageResealedByContact checks that a contact cannot
// pass off another contact's messages as its own, nor get them shown as
// the other's: a message sealed by eve but made in bob's session with
// alice is dropped, and bob's session is untouched.
func TestClientRejectsMessageResealedByContact(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	alice, bob := pair(t, r)
	eve := newTestClient(t, r, "eve")
	inv, err := alice.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eve.Accept(ctx, inv); err != nil {
		t.Fatal(err)
	}
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Send(ctx, "alice", "from bob"); err != nil {
		t.Fatal(err)
	}
	genuine := r.takeEnvelopes(alice.mailbox)
	if len(genuine) != 1 {
		t.Fatalf("alice's mailbox holds %d envelopes, want bob's one message", len(genuine))
	}
	r.inject(alice.mailbox, reseal(t, alice, eve.identity, genuine[0], 2))
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if ms, err := alice.Messages(ctx, Query{}); err != nil || len(ms) != 0 {
		t.Fatalf("after eve re-sealed bob's message alice has %q (%v), want nothing", texts(ms), err)
	}
	r.inject(alice.mailbox, genuine[0])
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if ms, err := alice.Messages(ctx, Query{}); err != nil || len(ms) != 1 || ms[0].Contact != "bob" {
		t.Fatalf("alice has %q (%v), want bob's genuine message", texts(ms), err)
	}
}
