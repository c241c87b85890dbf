package ferry

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestGroupTimer: a member sets the group's disappearing timer; every
// member's copy of a message sent after each took the change up carries
// it, and disappears on every device once shown and its time is up; a
// message that crossed the change keeps no timer everywhere; a member
// added later learns the timer from the next message of each member.
func TestGroupTimer(t *testing.T) {
	w, alice, bob, carol, dave := groupWorld(t)
	ctx := context.Background()
	if _, err := alice.CreateGroup(ctx, "club", []ContactID{contactID(t, alice, "bob"), contactID(t, alice, "carol")}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Client{bob, carol} {
		syncNow(t, c)
	}
	crossed := send(t, carol, "club", "sent before carol knew")[0]
	if err := bob.SetTimer(ctx, conv(t, bob, "club"), time.Minute); err != nil {
		t.Fatal(err)
	}
	b1 := send(t, bob, "club", "bob's goes")[0]
	for _, c := range []*Client{alice, carol} {
		syncNow(t, c)
		if d, err := c.Timer(ctx, conv(t, c, "club")); err != nil || d != time.Minute {
			t.Fatalf("%s's timer in the group: %v %v", c.Name(), d, err)
		}
	}
	a1 := send(t, alice, "club", "alice's goes")[0]
	c1 := send(t, carol, "club", "carol's goes")[0]
	if b1.Timer != time.Minute || a1.Timer != time.Minute || c1.Timer != time.Minute {
		t.Fatalf("timers of the sent messages: bob %v, alice %v, carol %v", b1.Timer, a1.Timer, c1.Timer)
	}

	// dave joins later and learns the timer from the others' next messages.
	if err := alice.AddToGroup(ctx, conv(t, alice, "club"), contactID(t, alice, "dave")); err != nil {
		t.Fatal(err)
	}
	syncNow(t, dave)
	syncNow(t, carol)
	a2 := send(t, alice, "club", "welcome dave")[0]
	c2 := send(t, carol, "club", "hi dave")[0]
	d1 := send(t, dave, "club", "hello")[0]
	for _, c := range []*Client{alice, bob, carol, dave} {
		syncNow(t, c)
	}
	if d, err := dave.Timer(ctx, conv(t, dave, "club")); err != nil || d != time.Minute {
		t.Fatalf("dave's timer in the group: %v %v", d, err)
	}
	// dave's first message went before he knew: no timer, on every device.
	want := map[[16]byte]time.Duration{crossed.ID: 0, b1.ID: time.Minute, a1.ID: time.Minute, c1.ID: time.Minute,
		a2.ID: time.Minute, c2.ID: time.Minute, d1.ID: 0}
	for _, c := range []*Client{alice, bob, carol, dave} {
		h := history(t, c, "club")
		if err := c.MarkShown(ctx, h); err != nil {
			t.Fatal(err)
		}
		for _, m := range h {
			if d, ok := want[m.ID]; ok && m.Timer != d {
				t.Errorf("%s has %q with timer %v, want %v", c.Name(), m.Text(), m.Timer, d)
			}
		}
	}
	w.Clock.Advance(2 * time.Minute)
	for _, c := range []*Client{alice, bob, carol, dave} {
		if _, _, err := c.Expire(ctx); err != nil {
			t.Fatal(err)
		}
		for id, d := range want {
			_, err := c.Message(ctx, id)
			switch {
			case c == dave && (id == crossed.ID || id == b1.ID || id == a1.ID || id == c1.ID):
				// sent before dave joined: never his
			case d > 0 && !errors.Is(err, ErrNoMessage):
				t.Errorf("%s still has a message with a timer: %v", c.Name(), err)
			case d == 0 && err != nil:
				t.Errorf("%s lost a message without a timer: %v", c.Name(), err)
			}
		}
	}
}
