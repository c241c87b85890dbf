package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-im/ferry/relay/blobtest"
)

// TestE2EFiles: a file and a voice note go from bob to alice through the
// binaries; read --json describes them with their local paths; one over
// the auto-download size waits for ferry save; bad input is one sentence
// and changes nothing.
func TestE2EFiles(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	alice, bob := newUser(t, r, "alice"), newUser(t, r, "bob")
	connect(t, alice, bob)
	dir := t.TempDir()
	data := blobtest.Data(3<<20+5, 4)
	doc := filepath.Join(dir, "report.pdf")
	os.WriteFile(doc, data, 0o600)
	bob.must("send", "alice", "--file", doc)
	bob.must("send", "alice", "--voice", filepath.Join("..", "..", "internal", "voice", "testdata", "hello.opus"))
	ms, code := alice.readJSON()
	if code != 0 || len(ms) != 2 {
		t.Fatalf("alice read %d messages (exit %d): %+v", len(ms), code, ms)
	}
	a := ms[0].Attachment
	sum := sha256.Sum256(data)
	if ms[0].Kind != "attachment" || ms[0].Conversation != "bob" || a == nil || a.Name != "report.pdf" || a.Size != int64(len(data)) ||
		a.SHA256 != hex.EncodeToString(sum[:]) || a.Transfer != "done" || a.Type != "application/pdf" {
		t.Fatalf("the file in read --json: %+v %+v", ms[0], a)
	}
	if b, err := os.ReadFile(a.Path); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("the saved file %s: %v", a.Path, err)
	}
	v := ms[1].Attachment
	if v == nil || !v.Voice || v.DurationMS < 4700 || v.DurationMS > 4800 || len(v.Waveform) != 64 || v.Type != "audio/ogg" {
		t.Fatalf("the voice note in read --json: %+v", v)
	}

	alice.must("set", "auto-download", "1MB")
	bob.must("send", "alice", "--file", doc)
	ms, _ = alice.readJSON()
	if len(ms) != 1 || ms[0].Attachment.Transfer != "pending" || ms[0].Attachment.Path != "" {
		t.Fatalf("over the auto-download size: %+v", ms)
	}
	out := strings.TrimSpace(alice.must("save", ms[0].ID, dir))
	if want := filepath.Join(dir, "report (2).pdf"); out != want {
		t.Fatalf("ferry save printed %q, want %q", out, want)
	}
	if b, _ := os.ReadFile(out); !bytes.Equal(b, data) {
		t.Fatal("the saved copy differs")
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"send", "alice", "--file", filepath.Join(dir, "missing.jpg")}, exitFail, "there is no file"},
		{[]string{"send", "alice", "--voice", doc}, exitFail, "is not an Ogg Opus voice note"},
		{[]string{"send", "alice", "--file", doc, "--voice", doc}, exitUsage, "give one of"},
		{[]string{"send", "carol", "--file", doc}, exitFail, "no contact or group named"},
		{[]string{"save", "nothex", dir}, exitUsage, "is not a message id"},
		{[]string{"save", strings.Repeat("ab", 16), dir}, exitFail, "no attachment has that message id"},
	} {
		_, errs, code := bob.run("", tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) || strings.Count(strings.TrimSpace(errs), "\n") > 0 {
			t.Errorf("ferry %s: exit %d, %q; want exit %d with one sentence containing %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.want)
		}
	}
	if ms, _ := alice.readJSON(); len(ms) != 0 {
		t.Errorf("bad input sent something: %+v", ms)
	}
}

// TestE2EGroups: the group commands through the binaries: create, send,
// read, list, rename, remove (the removed member reads nothing more and
// is told why when sending), leave; and bad input.
func TestE2EGroups(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	alice, bob, carol := newUser(t, r, "alice"), newUser(t, r, "bob"), newUser(t, r, "carol")
	connect(t, alice, bob)
	connect(t, carol, alice)
	bob.must("read")
	alice.must("read") // carol's confirmation
	alice.must("group", "create", "family", "bob", "carol")
	bob.must("read")
	carol.must("read")
	bob.must("send", "family", "hello from bob")
	ms, _ := carol.readJSON()
	if len(ms) != 1 || ms[0].Text != "hello from bob" || ms[0].From != "bob" || ms[0].Conversation != "family" || ms[0].Group != "family" {
		t.Fatalf("carol read %+v", ms)
	}
	// Every kind shown in a group is marked with the group's name: a
	// text, a reply, a file, a notice; and none in a direct conversation.
	doc := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(doc, []byte("group notes"), 0o600)
	bob.must("send", "family", "--file", doc)
	carol.must("reply", "family", ms[0].ID, "hi bob")
	alice.must("send", "bob", "just to bob")
	out := bob.must("read", "--all")
	for _, want := range []string{" [family] [ferry] alice added you to the group", " [family] carol: [re: hello from bob] hi bob", " alice: just to bob"} {
		if !strings.Contains(out, want) {
			t.Errorf("bob's read lacks %q:\n%s", want, out)
		}
	}
	out = carol.must("read")
	if !strings.Contains(out, " [family] bob: [file notes.txt") {
		t.Errorf("carol's read lacks bob's file in the group:\n%s", out)
	}
	out = alice.must("read", "--all")
	if !strings.Contains(out, " [family] me: [re: hello from bob] hi bob") && !strings.Contains(out, " [family] carol: [re: hello from bob] hi bob") {
		t.Errorf("alice's read lacks carol's reply in the group:\n%s", out)
	}
	// Disappearing messages in the group: bob sets them, carol's Ferry
	// takes them up.
	bob.must("timer", "family", "1h")
	if out := carol.must("read"); !strings.Contains(out, " [family] bob: ") || !strings.Contains(out, "1 hour") {
		t.Errorf("carol reads of the group's timer:\n%s", out)
	}
	if out := carol.must("timer", "family"); strings.TrimSpace(out) != "1 hour" {
		t.Errorf("carol's timer in the group: %q", out)
	}
	list := alice.must("group", "list")
	if !strings.Contains(list, "family\t3 members: me, bob, carol\tadmins: me") {
		t.Fatalf("group list: %q", list)
	}
	if _, errs, code := bob.run("", "group", "remove", "family", "carol"); code != exitFail || !strings.Contains(errs, "only the group's admins") {
		t.Errorf("bob removes: exit %d %q", code, errs)
	}
	alice.must("group", "remove", "family", "carol")
	// Each reads the removal in its own words (the re-key reaches bob
	// before the removal does).
	if out := bob.must("read"); !strings.Contains(out, " [family] [ferry] alice removed carol from the group.") {
		t.Errorf("bob reads of the removal:\n%s", out)
	}
	if out := carol.must("read"); !strings.Contains(out, " [family] [ferry] alice removed you from the group") {
		t.Errorf("carol reads of her removal:\n%s", out)
	}
	if out := alice.must("read", "--all"); !strings.Contains(out, " [family] [ferry] you removed carol.") {
		t.Errorf("alice reads of the removal:\n%s", out)
	}
	bob.must("send", "family", "after carol")
	ms, _ = carol.readJSON()
	for _, m := range ms {
		if m.Text == "after carol" {
			t.Fatal("carol read a message sent after her removal")
		}
	}
	if _, errs, code := carol.run("", "send", "family", "hi"); code != exitFail || !strings.Contains(errs, "alice removed you from the group") {
		t.Errorf("carol sends after removal: exit %d %q", code, errs)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"group", "create", "x"}, exitUsage, "usage: ferry group"},
		{[]string{"group", "create", "x", "dave"}, exitFail, `no contact named "dave"`},
		{[]string{"group", "add", "bob", "carol"}, exitFail, "is a contact, not a group"},
		{[]string{"group", "remove", "family", "zed"}, exitFail, `has no member called "zed"`},
	} {
		_, errs, code := alice.run("", tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("ferry %s: exit %d %q; want %d with %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.want)
		}
	}
	alice.must("group", "admins", "family", "me", "bob")
	bob.must("read")
	bob.must("group", "rename", "family", "kin")
	if out := bob.must("group", "list"); !strings.Contains(out, "kin\t") || !strings.Contains(out, "admins: alice, me") {
		t.Errorf("bob's list after being made an admin and renaming: %q", out)
	}
	bob.must("group", "leave", "kin")
	if out := bob.must("group", "list"); !strings.Contains(out, "you left the group") {
		t.Errorf("bob's list after leaving: %q", out)
	}
}
