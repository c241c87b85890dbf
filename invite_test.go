package ferry

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// testClock is a settable clock for Config.Now.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newClockedClient is newTestClient with the clock clk.
func newClockedClient(t *testing.T, r *fakeRelay, name string, clk *testClock) *Client {
	t.Helper()
	c, err := Init(context.Background(), Config{Home: t.TempDir(), dial: r.dial, Now: clk.now}, r.link.String(), name)
	if err != nil {
		t.Fatalf("Init %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestClientInviteExpires checks that an invite introduces nobody once
// InviteTTL has passed since Invite, and still works just before.
func TestClientInviteExpires(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	clk := &testClock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	alice := newClockedClient(t, r, "alice", clk)
	bob, carol := newTestClient(t, r, "bob"), newTestClient(t, r, "carol")
	old, err := alice.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clk.advance(time.Hour)
	fresh, err := alice.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clk.advance(InviteTTL - time.Minute) // old is past its TTL, fresh is not
	if _, err := bob.Accept(ctx, old); err != nil {
		t.Fatal(err) // bob cannot know the invite expired
	}
	if _, err := carol.Accept(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	var added []string
	var notices []*Message
	if err := alice.Sync(ctx, SyncOptions{
		OnContact:  func(n string) { added = append(added, n) },
		OnMessages: func(ms []*Message) { notices = append(notices, ms...) },
	}); err != nil {
		t.Fatal(err)
	}
	ks, err := alice.Contacts(ctx)
	if err != nil || len(ks) != 1 || ks[0].Name != "carol" || len(added) != 1 {
		t.Fatalf("alice's contacts: got %+v (%v), added %q; want only carol", ks, err, added)
	}
	if len(notices) != 0 {
		t.Fatalf("an expired invite produced messages %q", texts(notices))
	}
}

// TestClientInviteReuseNotice checks that a second introduction with a
// used invite's secret creates no contact but leaves a notice, in the
// conversation with the contact that used the invite first, naming both.
func TestClientInviteReuseNotice(t *testing.T) {
	ctx := context.Background()
	r := newFakeRelay()
	defer r.close()
	alice := newTestClient(t, r, "alice")
	bob, mallory, eve := newTestClient(t, r, "bob"), newTestClient(t, r, "mallory"), newTestClient(t, r, "eve")
	inv, err := alice.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.Accept(ctx, inv); err != nil {
		t.Fatal(err)
	}
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, late := range []*Client{bob, eve} {
		if _, err := late.Accept(ctx, inv); err != nil {
			t.Fatal(err)
		}
		var got []*Message
		if err := alice.Sync(ctx, SyncOptions{OnMessages: func(ms []*Message) { got = append(got, ms...) }}); err != nil {
			t.Fatal(err)
		}
		if ks, err := alice.Contacts(ctx); err != nil || len(ks) != 1 || ks[0].Name != "mallory" {
			t.Fatalf("use %d: alice's contacts: got %+v (%v), want only mallory", i+2, ks, err)
		}
		if len(got) != 1 || got[0].Contact != "mallory" || got[0].Outgoing ||
			!strings.HasPrefix(got[0].Text, NoticePrefix) || !strings.Contains(got[0].Text, `"`+late.name+`"`) ||
			!strings.Contains(got[0].Text, "safety numbers with mallory") {
			t.Fatalf("use %d: alice was told %q, want one notice about %s in mallory's conversation", i+2, texts(got), late.name)
		}
	}
	unread, err := alice.Messages(ctx, Query{Unread: true})
	if err != nil || len(unread) != 2 {
		t.Fatalf("alice's unread messages: got %q (%v), want the two notices", texts(unread), err)
	}
}
