package main

import (
	"strings"
	"testing"
	"time"
)

// TestAppGroupTimer: disappearing messages in a group, set in the app:
// Alice (the app) sets the group's timer to 10 seconds, Bob's and
// Carol's Ferry (the command line) take it up, and Alice's next message
// is gone from her app and from their devices once its time is up after
// they read it.
func TestAppGroupTimer(t *testing.T) {
	relay := startRelay(t)
	alice, bob, carol := newUser(t, relay, "alice"), newUser(t, relay, "bob"), newUser(t, relay, "carol")
	connect(t, alice, bob)
	connect(t, carol, alice)
	bob.must("read")
	alice.must("read") // carol's confirmation
	alice.must("group", "create", "club", "bob", "carol")
	bob.must("read")
	carol.must("read")

	b := startBrowser(t)
	a := b.startApp(alice, relay.link)
	a.openConversation("club")
	if eval[bool](a, `document.querySelector('#timer').disabled`) {
		a.fail("the timer is disabled in a group")
	}
	a.setValue("#timer", "10")
	for _, u := range []*user{bob, carol} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			u.must("read")
			if got := strings.TrimSpace(u.must("timer", "club")); got == "10 seconds" {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("%s's timer in the group: %q, want 10 seconds", u.name, got)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	a.send("gone in ten")
	for _, u := range []*user{bob, carol} {
		readUntil(t, u, "gone in ten")
		ms, _ := u.readJSON("--all")
		found := false
		for _, m := range ms {
			if m.Text == "gone in ten" {
				found = true
				if m.Expires == "" || m.Group != "club" {
					t.Errorf("%s's copy: expires %q, group %q; want a time and club", u.name, m.Expires, m.Group)
				}
			}
		}
		if !found {
			t.Fatalf("%s's history lacks the message", u.name)
		}
	}
	a.until(40*time.Second, "Alice's message gone from her app", "!"+messageWith("gone in ten"))
	for _, u := range []*user{bob, carol} {
		deadline := time.Now().Add(40 * time.Second)
		for strings.Contains(u.must("read", "--all"), "gone in ten") {
			if time.Now().After(deadline) {
				t.Fatalf("%s still has the message 40 s after reading it with a 10-second timer", u.name)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
}
