package ferry

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// prekeysOf returns the signed and last-resort records r holds for c.
func (r *fakeRelay) prekeysOf(c *Client) (signed, lastResort []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.signed[c.mailbox]), bytes.Clone(r.lastRes[c.mailbox])
}

// TestClientRotatesPrekeys checks that a sync after prekeyRotation
// uploads a new signed prekey and last-resort ML-KEM prekey, that an
// introduction made with the old bundle (in flight across the rotation)
// still sets up a session, and that one made with the new bundle does too.
func TestClientRotatesPrekeys(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	clk := &testClock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	alice := newClockedClient(t, r, "alice", clk)
	bob, carol := newTestClient(t, r, "bob"), newTestClient(t, r, "carol")
	signed0, last0 := r.prekeysOf(alice)
	if signed0 == nil || last0 == nil {
		t.Fatal("Init uploaded no signed or last-resort prekey")
	}
	clk.advance(prekeyRotation - time.Minute)
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if s, l := r.prekeysOf(alice); !bytes.Equal(s, signed0) || !bytes.Equal(l, last0) {
		t.Fatal("prekeys rotated before prekeyRotation")
	}
	inv, err := alice.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// carol's introduction uses the old bundle and waits at the relay.
	if _, err := carol.Accept(ctx, inv); err != nil {
		t.Fatal(err)
	}
	clk.advance(2 * time.Minute)
	var added []string
	if err := alice.Sync(ctx, SyncOptions{OnContact: func(n string) { added = append(added, n) }}); err != nil {
		t.Fatal(err)
	}
	signed1, last1 := r.prekeysOf(alice)
	if bytes.Equal(signed1, signed0) || bytes.Equal(last1, last0) {
		t.Fatal("a sync after prekeyRotation uploaded no new signed or last-resort prekey")
	}
	if recordID(signed1) <= recordID(signed0) || recordID(last1) <= recordID(last0) {
		t.Fatalf("new prekey ids %d, %d not above the old %d, %d", recordID(signed1), recordID(last1), recordID(signed0), recordID(last0))
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
	if err := alice.Sync(ctx, SyncOptions{OnContact: func(n string) { added = append(added, n) }}); err != nil {
		t.Fatal(err)
	}
	if len(added) != 1 || added[0] != "bob" {
		t.Fatalf("alice added %q, want bob (new bundle)", added)
	}
	if s, l := r.prekeysOf(alice); !bytes.Equal(s, signed1) || !bytes.Equal(l, last1) {
		t.Fatal("prekeys rotated again within prekeyRotation")
	}
	// Both sessions work.
	for _, k := range []*Client{bob, carol} {
		if _, err := k.Send(ctx, "alice", "hi from "+k.name); err != nil {
			t.Fatal(err)
		}
	}
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	if ms, err := alice.Messages(ctx, Query{}); err != nil || len(ms) != 2 {
		t.Fatalf("alice got %q (%v), want a message from each", texts(ms), err)
	}
}
