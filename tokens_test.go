package ferry

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/wire"
)

// TestTokensPerContact: every invite carries a token of its own, not the
// profile's; once the invitee is a contact, the inviter gives it a token
// of its own in the session and, when that arrived, revokes the
// invite's, so that the old invite link can neither fill the mailbox nor
// fetch bundles; the invitee gave the inviter a token of its own too;
// removing a contact revokes its token. Before the change every invite
// carried the one profile token, which could never be revoked.
func TestTokensPerContact(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	alice, bob := w.client(t, "alice", nil), w.client(t, "bob", nil)
	has := func(c *Client, tok [32]byte) bool {
		t.Helper()
		ok, err := w.relay.Faults.HasToken(ctx, c.a.Mailbox, sha256.Sum256(tok[:]))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	var invs []link.Invite
	for range 2 {
		s, err := alice.Invite(ctx)
		if err != nil {
			t.Fatal(err)
		}
		inv, err := link.ParseInvite(s)
		if err != nil {
			t.Fatal(err)
		}
		if inv.Token == alice.a.Token || !has(alice, inv.Token) {
			t.Fatalf("invite token: the profile's %v, registered %v; want a fresh one the relay has", inv.Token == alice.a.Token, has(alice, inv.Token))
		}
		invs = append(invs, inv)
	}
	if invs[0].Token == invs[1].Token {
		t.Fatal("two invites carry the same token")
	}
	if _, err := bob.Accept(ctx, invs[0].String()); err != nil {
		t.Fatal(err)
	}
	syncNow(t, alice) // takes the introduction, sends bob a token of his own
	syncNow(t, bob)   // takes it, and acknowledges it
	syncNow(t, alice) // the acknowledgement: the invite's token goes
	bobAtAlice := contactRow(t, alice, "bob")
	aliceAtBob := contactRow(t, bob, "alice")
	if len(bobAtAlice.MyToken) != 32 || [32]byte(aliceAtBob.Token) != [32]byte(bobAtAlice.MyToken) {
		t.Fatal("bob does not send to alice with the token she made for him")
	}
	if has(alice, invs[0].Token) || !has(alice, [32]byte(bobAtAlice.MyToken)) || !has(alice, invs[1].Token) {
		t.Fatalf("alice's relay: used invite's token %v, bob's %v, open invite's %v; want false, true, true",
			has(alice, invs[0].Token), has(alice, [32]byte(bobAtAlice.MyToken)), has(alice, invs[1].Token))
	}
	// Whoever kept the used invite can neither send nor fetch bundles.
	kp, err := channel.GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	cn, err := bob.a.Dialer.Dial(ctx, alice.a.Relay, kp)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	var re *relayclient.RefusedError
	if _, err := cn.GetBundle(ctx, alice.a.Mailbox, invs[0].Token); !errors.As(err, &re) || re.Code != wire.CodeDenied {
		t.Fatalf("GetBundle with the used invite's token: got %v, want Denied", err)
	}
	res, err := cn.SendBatch(ctx, []wire.Send{{ID: [16]byte{1}, To: alice.a.Mailbox, Token: invs[0].Token, Envelope: []byte("junk")}})
	if err != nil || len(res) != 1 || res[0].Code != wire.CodeDenied {
		t.Fatalf("Send with the used invite's token: got %+v, %v; want Denied", res, err)
	}
	// The contacts still talk.
	send(t, bob, "alice", "hi")
	syncNow(t, alice)
	if got := texts(unread(t, alice)); got[len(got)-1] != "bob:hi" {
		t.Fatalf("alice got %q, want bob's hi last", got)
	}
	// bob's own token for alice is one of its own, and goes with her.
	if len(aliceAtBob.MyToken) != 32 || [32]byte(bobAtAlice.Token) != [32]byte(aliceAtBob.MyToken) || !has(bob, [32]byte(aliceAtBob.MyToken)) {
		t.Fatal("alice does not send to bob with a registered token he made for her")
	}
	if err := bob.RemoveContact(ctx, contactID(t, bob, "alice")); err != nil {
		t.Fatal(err)
	}
	if has(bob, [32]byte(aliceAtBob.MyToken)) {
		t.Fatal("bob removed alice, and her token still works")
	}
	if err := alice.RemoveContact(ctx, contactID(t, alice, "bob")); err != nil {
		t.Fatal(err)
	}
	if has(alice, [32]byte(bobAtAlice.MyToken)) {
		t.Fatal("alice removed bob, and his token still works")
	}
}

// contactRow returns c's stored contact named name.
func contactRow(t *testing.T, c *Client, name string) *localstore.Contact {
	t.Helper()
	var k *localstore.Contact
	id := contactID(t, c, name)
	err := c.a.Store.Update(context.Background(), func(tx *localstore.Tx) (err error) {
		k, err = contactByID(tx, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return k
}
