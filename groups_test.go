package ferry

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-im/ferry/internal/clienttest"
	"github.com/ferry-im/ferry/relay/blobtest"
)

// groupWorld is alice with contacts bob, carol and dave, who are not
// contacts of each other, and dave on a second relay.
func groupWorld(t *testing.T) (w *world, alice, bob, carol, dave *Client) {
	w = newWorld(t)
	alice, bob, carol = w.client(t, "alice", nil), w.client(t, "bob", nil), w.client(t, "carol", nil)
	dave = w.client(t, "dave", w.StartRelay(clienttest.RelayConfig{}))
	for _, c := range []*Client{bob, carol, dave} {
		introduce(t, alice, c)
		syncNow(t, c) // the introduction's receipt: confirmed
	}
	return
}

func groupTexts(t *testing.T, c *Client, group string) []string {
	t.Helper()
	syncNow(t, c)
	ms, err := c.Messages(context.Background(), Query{Conversation: conv(t, c, group)})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		if m.Kind != KindNotice {
			out = append(out, m.From+":"+m.Text())
		}
	}
	return out
}

// TestGroupConversation: a group of four on two relays; each message is
// one envelope fanned out; members who are not contacts read each other;
// rename reaches everyone; only admins manage.
func TestGroupConversation(t *testing.T) {
	_, alice, bob, carol, dave := groupWorld(t)
	ctx := context.Background()
	g, err := alice.CreateGroup(ctx, "family", []ContactID{contactID(t, alice, "bob"), contactID(t, alice, "carol"), contactID(t, alice, "dave")})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Client{bob, carol, dave} {
		syncNow(t, c)
	}
	send(t, alice, "family", "hello everyone")
	send(t, bob, "family", "hi from bob")
	send(t, dave, "family", "hi from dave")
	want := []string{"alice:hello everyone", "bob:hi from bob", "dave:hi from dave"}
	for _, c := range []*Client{carol} {
		if got := groupTexts(t, c, "family"); !slices.Equal(got, want) {
			t.Errorf("%s reads %q, want %q", c.Name(), got, want)
		}
	}
	if got := groupTexts(t, alice, "family"); !slices.Equal(got, []string{":hello everyone", "bob:hi from bob", "dave:hi from dave"}) {
		t.Errorf("alice reads %q", got)
	}
	if err := bob.RenameGroup(ctx, conv(t, bob, "family"), "bob's"); err == nil || !strings.Contains(err.Error(), "only the group's admins") {
		t.Errorf("a member renames: %v", err)
	}
	if err := alice.RenameGroup(ctx, g.ID, "kin"); err != nil {
		t.Fatal(err)
	}
	syncNow(t, carol)
	gs, _ := carol.Groups(ctx)
	if len(gs) != 1 || gs[0].Name != "kin" || !slices.Equal(gs[0].Admins, []string{"alice"}) || len(gs[0].Members) != 3 || gs[0].Admin {
		t.Fatalf("carol's groups: %+v", gs)
	}
}

// TestGroupRemove: after alice removes carol, carol's client reads
// nothing more, and says why if she tries to send; the others go on.
func TestGroupRemove(t *testing.T) {
	_, alice, bob, carol, dave := groupWorld(t)
	ctx := context.Background()
	if _, err := alice.CreateGroup(ctx, "club", []ContactID{contactID(t, alice, "bob"), contactID(t, alice, "carol"), contactID(t, alice, "dave")}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Client{bob, carol, dave} {
		syncNow(t, c)
	}
	send(t, bob, "club", "before")
	if got := groupTexts(t, carol, "club"); !slices.Equal(got, []string{"bob:before"}) {
		t.Fatalf("carol before: %q", got)
	}
	if err := alice.RemoveFromGroup(ctx, conv(t, alice, "club"), "carol"); err != nil {
		t.Fatal(err)
	}
	syncNow(t, bob)
	syncNow(t, dave)
	send(t, bob, "club", "after")
	send(t, alice, "club", "after too")
	if got := groupTexts(t, carol, "club"); !slices.Equal(got, []string{"bob:before"}) {
		t.Errorf("carol, removed, reads %q", got)
	}
	if got := groupTexts(t, dave, "club"); !slices.Equal(got, []string{"bob:before", "bob:after", "alice:after too"}) {
		t.Errorf("dave reads %q", got)
	}
	_, err := carol.Send(ctx, conv(t, carol, "club"), "let me in")
	if err == nil || !strings.Contains(err.Error(), "alice removed you from the group") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("carol sends after removal: %v", err)
	}
	// bob leaves; alice (the admin) re-keys; dave still reads alice.
	if err := bob.LeaveGroup(ctx, conv(t, bob, "club")); err != nil {
		t.Fatal(err)
	}
	syncNow(t, alice)
	syncNow(t, dave)
	send(t, alice, "club", "without bob")
	if got := groupTexts(t, dave, "club"); got[len(got)-1] != "alice:without bob" {
		t.Errorf("dave after bob left: %q", got)
	}
	if got := groupTexts(t, bob, "club"); slices.Contains(got, "alice:without bob") {
		t.Errorf("bob read after leaving: %q", got)
	}
}

// TestGroupAttachment: a photo to a group on two relays is uploaded once
// per relay and read by everyone.
func TestGroupAttachment(t *testing.T) {
	w, alice, bob, carol, dave := groupWorld(t)
	ctx := context.Background()
	if _, err := alice.CreateGroup(ctx, "trip", []ContactID{contactID(t, alice, "bob"), contactID(t, alice, "carol"), contactID(t, alice, "dave")}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Client{bob, carol, dave} {
		syncNow(t, c)
	}
	data := blobtest.Data(300000, 9)
	if _, err := alice.SendFile(ctx, conv(t, alice, "trip"), writeFile(t, "view.bin", data), SendFileOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := w.relay.Metric("ferry_relay_blobs_completed_total", ""); n != 1 {
		t.Errorf("blobs on alice's relay: %v, want 1 for bob and carol", n)
	}
	for _, c := range []*Client{bob, carol, dave} {
		syncNow(t, c)
		ms, _ := c.Messages(ctx, Query{Conversation: conv(t, c, "trip")})
		var a *Attachment
		for _, m := range ms {
			if x, ok := m.Body.(*Attachment); ok {
				a = x
			}
		}
		if a == nil || a.Transfer != TransferDone {
			t.Fatalf("%s: %+v", c.Name(), a)
		}
		if b, _ := os.ReadFile(a.Path); !bytes.Equal(b, data) {
			t.Fatalf("%s's copy differs", c.Name())
		}
	}
}

func groupNotices(t *testing.T, c *Client, group string) []string {
	t.Helper()
	syncNow(t, c)
	ms, err := c.Messages(context.Background(), Query{Conversation: conv(t, c, group)})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		if m.Kind == KindNotice {
			out = append(out, m.Text())
		}
	}
	return out
}

// TestGroupNotices: each member reads who did what to whom, in its own
// words: the removed member "alice removed you", the others "alice
// removed carol", whichever of the removal and the re-key comes first;
// and by the names it gave its contacts (bob calls alice "mom").
func TestGroupNotices(t *testing.T) {
	_, alice, bob, carol, dave := groupWorld(t)
	ctx := context.Background()
	if err := bob.RenameContact(ctx, contactID(t, bob, "alice"), "mom"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.CreateGroup(ctx, "club", []ContactID{contactID(t, alice, "bob"), contactID(t, alice, "carol")}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Client{bob, carol} {
		syncNow(t, c)
	}
	g := conv(t, alice, "club")
	if err := alice.AddToGroup(ctx, g, contactID(t, alice, "dave")); err != nil {
		t.Fatal(err)
	}
	if err := alice.RenameGroup(ctx, g, "circle"); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetGroupAdmins(ctx, g, []string{"me", "bob"}); err != nil {
		t.Fatal(err)
	}
	if err := alice.RemoveFromGroup(ctx, g, "carol"); err != nil {
		t.Fatal(err)
	}
	syncNow(t, dave)
	if err := dave.LeaveGroup(ctx, conv(t, dave, "circle")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c     *Client
		group string
		want  []string
	}{
		{alice, "circle", []string{`you created the group "club" with bob and carol.`, "you added dave.", `you renamed the group "circle".`, "you made the admins: you and bob.", "you removed carol.", "dave left the group."}},
		{bob, "circle", []string{`mom added you to the group "club" (3 members).`, "mom added dave.", `mom renamed the group "circle".`, "mom made the admins: mom and you.", "mom removed carol from the group.", "dave left the group."}},
		{carol, "circle", []string{`alice added you to the group "club" (3 members).`, "alice added dave.", `alice renamed the group "circle".`, "alice made the admins: alice and bob.", "alice removed you from the group; you can no longer send to it or read what it says."}},
	} {
		if got := groupNotices(t, tc.c, tc.group); !slices.Equal(got, tc.want) {
			t.Errorf("%s reads\n%q\nwant\n%q", tc.c.Name(), got, tc.want)
		}
	}
}
