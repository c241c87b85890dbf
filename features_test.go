package ferry

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// last returns the newest message of c's conversation named name.
func lastOf(t *testing.T, c *Client, name string) *Message {
	t.Helper()
	ms, err := c.Messages(context.Background(), Query{Conversation: conv(t, c, name), Last: 1})
	if err != nil || len(ms) != 1 {
		t.Fatalf("%s's last message with %s: %v (%d)", c.Name(), name, err, len(ms))
	}
	return ms[0]
}

func history(t *testing.T, c *Client, name string) []*Message {
	t.Helper()
	ms, err := c.Messages(context.Background(), Query{Conversation: conv(t, c, name)})
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func TestReplyReactEdit(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob := w.pair(t)
	m := send(t, bob, "alice", "lunch at noon?")[0]
	syncNow(t, alice)
	r, err := alice.Reply(ctx, conv(t, alice, "bob"), m.ID, "yes!")
	if err != nil {
		t.Fatal(err)
	}
	if q := r.Body.(*Reply).Quote; q.Missing || q.From != "bob" || q.Text != "lunch at noon?" {
		t.Fatalf("alice's quote: %+v", q)
	}
	if err := alice.React(ctx, conv(t, alice, "bob"), m.ID, "👍"); err != nil {
		t.Fatal(err)
	}
	w.Clock.Advance(time.Millisecond) // reactions in one millisecond are ordered by id
	if err := alice.React(ctx, conv(t, alice, "bob"), m.ID, "❤️"); err != nil {
		t.Fatal(err)
	}
	var changed []ConversationID
	if err := bob.Sync(ctx, SyncOptions{OnChanged: func(ids []ConversationID) { changed = append(changed, ids...) }}); err != nil {
		t.Fatal(err)
	}
	if len(changed) == 0 {
		t.Error("no OnChanged for the reactions")
	}
	got := lastOf(t, bob, "alice")
	if rep, ok := got.Body.(*Reply); !ok || rep.Text != "yes!" || rep.Quote.Missing || !rep.Quote.Outgoing || rep.Quote.Text != "lunch at noon?" {
		t.Fatalf("bob got %+v (%+v)", got, got.Body)
	}
	h := history(t, bob, "alice")
	orig := h[len(h)-2]
	if len(orig.Reactions) != 1 || orig.Reactions[0].Emoji != "❤️" || orig.Reactions[0].From != "alice" {
		t.Fatalf("reactions on bob's side: %+v", orig.Reactions)
	}
	// Bob edits his message; alice sees the new text, marked edited, and
	// the quote in her reply follows.
	if err := bob.Edit(ctx, conv(t, bob, "alice"), m.ID, "lunch at one?"); err != nil {
		t.Fatal(err)
	}
	syncNow(t, alice)
	h = history(t, alice, "bob")
	if e := h[len(h)-2]; !e.Edited || e.Text() != "lunch at one?" || len(e.Reactions) != 1 || !e.Reactions[0].Outgoing {
		t.Fatalf("alice sees %q edited %v reactions %+v", e.Text(), e.Edited, e.Reactions)
	}
	if q := lastOf(t, alice, "bob").Body.(*Reply).Quote; q.Text != "lunch at one?" {
		t.Fatalf("quote after the edit: %+v", q)
	}
	// Nobody edits or deletes someone else's message, nor after the window.
	if err := alice.Edit(ctx, conv(t, alice, "bob"), m.ID, "mine now"); !errors.Is(err, ErrNotYours) {
		t.Fatalf("alice edits bob's message: %v", err)
	}
	w.Clock.Advance(EditWindow + time.Minute)
	if err := bob.DeleteForEveryone(ctx, conv(t, bob, "alice"), m.ID); !errors.Is(err, ErrTooLate) {
		t.Fatalf("delete after the window: %v", err)
	}
}

func TestDeleteForEveryone(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob := w.pair(t)
	ms := send(t, bob, "alice", "oops, wrong chat", "second")
	syncNow(t, alice)
	if err := bob.DeleteForEveryone(ctx, conv(t, bob, "alice"), ms[0].ID); err != nil {
		t.Fatal(err)
	}
	if h := history(t, bob, "alice"); h[len(h)-2].Kind != KindDeleted {
		t.Fatalf("bob's own copy: %s", show(h))
	}
	syncNow(t, alice)
	h := history(t, alice, "bob")
	if d := h[len(h)-2]; d.Kind != KindDeleted || d.Text() != "this message was deleted" {
		t.Fatalf("alice sees %s", show(h))
	}
	// A delete that arrives before its target (reordered) still applies;
	// a forged one (alice deleting bob's message) does not.
	if err := alice.DeleteForEveryone(ctx, conv(t, alice, "bob"), ms[1].ID); !errors.Is(err, ErrNotYours) {
		t.Fatalf("alice deletes bob's message: %v", err)
	}
}

func TestDisappearing(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob := w.pair(t)
	before := send(t, bob, "alice", "before the timer")[0]
	if err := alice.SetTimer(ctx, conv(t, alice, "bob"), time.Minute); err != nil {
		t.Fatal(err)
	}
	a1 := send(t, alice, "bob", "this goes in a minute")[0]
	if a1.Timer != time.Minute {
		t.Fatalf("alice's message timer %v", a1.Timer)
	}
	// bob's message crossed the change: no timer on both sides.
	syncNow(t, alice)
	syncNow(t, bob) // takes the change up and tells alice
	if d, _ := bob.Timer(ctx, conv(t, bob, "alice")); d != time.Minute {
		t.Fatalf("bob's timer %v", d)
	}
	b1 := send(t, bob, "alice", "mine goes too")[0]
	if b1.Timer != time.Minute {
		t.Fatalf("bob's new message timer %v", b1.Timer)
	}
	syncNow(t, alice)
	ah := history(t, alice, "bob")
	if err := alice.MarkShown(ctx, ah); err != nil {
		t.Fatal(err)
	}
	bh := history(t, bob, "alice")
	if err := bob.MarkShown(ctx, bh); err != nil {
		t.Fatal(err)
	}
	if show(bh) != show(history(t, bob, "alice")) {
		t.Fatal("history changed by reading")
	}
	w.Clock.Advance(2 * time.Minute)
	for _, c := range []*Client{alice, bob} {
		if _, _, err := c.Expire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		c    *Client
		peer string
	}{{alice, "bob"}, {bob, "alice"}} {
		h := history(t, tc.c, tc.peer)
		var got []string
		for _, m := range h {
			if m.Kind != KindNotice {
				got = append(got, m.Text())
			}
		}
		if len(got) != 2 || !slices.Contains(got, "before the timer") || !slices.Contains(got, "disappearing messages set to 1 minute") {
			t.Errorf("%s after the timer: %q", tc.c.Name(), got)
		}
		if _, err := tc.c.Message(ctx, a1.ID); !errors.Is(err, ErrNoMessage) {
			t.Errorf("%s still has alice's message: %v", tc.c.Name(), err)
		}
		if _, err := tc.c.Message(ctx, before.ID); err != nil {
			t.Errorf("%s lost the message from before the timer: %v", tc.c.Name(), err)
		}
	}
}

// TestTimerConverges: both set a timer at once; both end with the later.
func TestTimerConverges(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob := w.pair(t)
	if err := alice.SetTimer(ctx, conv(t, alice, "bob"), time.Hour); err != nil {
		t.Fatal(err)
	}
	w.Clock.Advance(time.Second)
	if err := bob.SetTimer(ctx, conv(t, bob, "alice"), 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		syncNow(t, alice)
		syncNow(t, bob)
	}
	for _, c := range []*Client{alice, bob} {
		all, _ := c.Conversations(ctx)
		if all[0].Timer != 5*time.Minute {
			t.Errorf("%s's timer %v, want 5m", c.Name(), all[0].Timer)
		}
	}
}

func TestTyping(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob := w.pair(t)
	if err := alice.Typing(ctx, conv(t, alice, "bob"), true); err != nil {
		t.Fatal(err)
	}
	var got []TypingEvent
	if err := bob.Sync(ctx, SyncOptions{OnTyping: func(ts []TypingEvent) { got = append(got, ts...) }}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].Typing || got[0].Contact != contactID(t, bob, "alice") {
		t.Fatalf("bob got %+v", got)
	}
	// Turned off on bob's side: nothing reported; on alice's: nothing sent.
	if err := bob.SetTypingIndicators(ctx, false); err != nil {
		t.Fatal(err)
	}
	alice.Typing(ctx, conv(t, alice, "bob"), false)
	got = nil
	bob.Sync(ctx, SyncOptions{OnTyping: func(ts []TypingEvent) { got = append(got, ts...) }})
	if len(got) != 0 {
		t.Fatalf("bob with typing off got %+v", got)
	}
	alice.SetTypingIndicators(ctx, false)
	if n, _ := alice.Queued(ctx); n != 0 {
		t.Fatal("queued before")
	}
	alice.Typing(ctx, conv(t, alice, "bob"), true)
	if on, _ := alice.TypingIndicators(ctx); on {
		t.Fatal("alice's typing indicators still on")
	}
	// A typing indicator delivered late is not told.
	bob.SetTypingIndicators(ctx, true)
	bob.Typing(ctx, conv(t, bob, "alice"), true)
	w.Clock.Advance(time.Minute)
	got = nil
	alice.Sync(ctx, SyncOptions{OnTyping: func(ts []TypingEvent) { got = append(got, ts...) }})
	if len(got) != 0 {
		t.Fatalf("a late typing indicator was told: %+v", got)
	}
}

func TestConversationLast(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.pair(t)
	send(t, bob, "alice", "one", "two")
	syncNow(t, alice)
	all, err := alice.Conversations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].Last == nil || all[0].Last.Text() != "two" || all[0].Unread != 2 {
		t.Fatalf("conversations: %+v", all)
	}
}

func TestSafetyCode(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob := w.pair(t)
	code, err := alice.SafetyCode(ctx, contactID(t, alice, "bob"))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := bob.CompareSafetyCode(ctx, contactID(t, bob, "alice"), code); !ok || err != nil {
		t.Fatalf("bob compares alice's code: %v %v", ok, err)
	}
	if ok, _ := alice.CompareSafetyCode(ctx, contactID(t, alice, "bob"), code); ok {
		t.Fatal("alice's own code matched her side")
	}
	if _, err := bob.CompareSafetyCode(ctx, contactID(t, bob, "alice"), "https://example.com"); err == nil {
		t.Fatal("a foreign code compared")
	}
}

// TestFeaturesInGroup: a reply, a reaction, an edit and a delete in a
// group reach the other members (a group's timer: TestGroupTimer).
func TestFeaturesInGroup(t *testing.T) {
	ctx := context.Background()
	_, alice, bob, carol, _ := groupWorld(t)
	if _, err := alice.CreateGroup(ctx, "family", []ContactID{contactID(t, alice, "bob"), contactID(t, alice, "carol")}); err != nil {
		t.Fatal(err)
	}
	syncNow(t, bob)
	syncNow(t, carol)
	m := send(t, bob, "family", "dinner at eight?")[0]
	syncNow(t, alice)
	if _, err := alice.Reply(ctx, conv(t, alice, "family"), m.ID, "yes"); err != nil {
		t.Fatal(err)
	}
	if err := alice.React(ctx, conv(t, alice, "family"), m.ID, "👍"); err != nil {
		t.Fatal(err)
	}
	if err := bob.Edit(ctx, conv(t, bob, "family"), m.ID, "dinner at nine?"); err != nil {
		t.Fatal(err)
	}
	gone := send(t, bob, "family", "wrong group")[0]
	if err := bob.DeleteForEveryone(ctx, conv(t, bob, "family"), gone.ID); err != nil {
		t.Fatal(err)
	}
	syncNow(t, carol)
	syncNow(t, carol)
	h := history(t, carol, "family")
	var got []string
	for _, x := range h {
		if x.Kind == KindNotice {
			continue
		}
		line := x.From + ":" + x.Text()
		if x.Edited {
			line += " (edited)"
		}
		for _, r := range x.Reactions {
			line += " [" + r.Emoji + " " + r.From + "]"
		}
		if r, ok := x.Body.(*Reply); ok {
			line += " re:" + r.Quote.Text
		}
		got = append(got, line)
	}
	want := []string{"bob:dinner at nine? (edited) [👍 alice]", "alice:yes re:dinner at nine?", "bob:this message was deleted"}
	if !slices.Equal(got, want) {
		t.Fatalf("carol sees %q, want %q", got, want)
	}
	// A timer in a group reaches the members (TestGroupTimer has more).
	if err := alice.SetTimer(ctx, conv(t, alice, "family"), time.Minute); err != nil {
		t.Fatalf("a timer in a group: %v", err)
	}
	syncNow(t, carol)
	if d, err := carol.Timer(ctx, conv(t, carol, "family")); err != nil || d != time.Minute {
		t.Fatalf("carol's timer in the group: %v %v", d, err)
	}
}
