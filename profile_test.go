package ferry

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/clienttest"
	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/sqlite"
)

// TestContactManagement renames, blocks and removes a contact (a new user
// found no way to), and checks that a removed contact can come back with
// a new invite.
func TestContactManagement(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob := w.pair(t)
	carol := w.client(t, "carol", nil)
	introduce(t, alice, carol)
	id := contactID(t, alice, "bob")
	if err := alice.RenameContact(ctx, id, "carol"); err == nil || !strings.Contains(err.Error(), "already have a contact named") {
		t.Fatalf("rename onto another contact's name: got %v", err)
	}
	if err := alice.RenameContact(ctx, id, "Bob Smith"); err != nil {
		t.Fatal(err)
	}
	send(t, bob, "alice", "to bob smith")
	syncNow(t, alice)
	if got := unread(t, alice); len(got) != 2 || got[1].From != "Bob Smith" || got[1].ConversationName != "Bob Smith" {
		t.Fatalf("after the rename: %s", show(got))
	}
	if err := alice.MarkShown(ctx, unread(t, alice)); err != nil {
		t.Fatal(err)
	}

	// Blocked: bob's token is revoked, so his messages fail at the relay
	// (and any that were on the way are dropped), and alice cannot send
	// to him.
	if err := alice.BlockContact(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Send(ctx, conv(t, bob, "alice"), "are you there?"); !errors.Is(err, ErrRefused) {
		t.Fatalf("bob's send to alice who blocked him: got %v, want ErrRefused", err)
	}
	syncNow(t, alice)
	if got := unread(t, alice); len(got) != 0 {
		t.Fatalf("a blocked contact's message was stored: %s", show(got))
	}
	if _, err := alice.Send(ctx, conv(t, alice, "Bob Smith"), "hi"); err == nil || !strings.Contains(err.Error(), "you blocked Bob Smith") {
		t.Fatalf("sending to a blocked contact: got %v", err)
	}
	if err := alice.BlockContact(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	send(t, bob, "alice", "now?")
	syncNow(t, alice)
	// "now?" waits for "are you there?", which failed, until the hold
	// timeout.
	w.Clock.Advance(3 * time.Minute)
	syncNow(t, alice)
	if got := show(unread(t, alice)); got != "[Bob Smith:now?]" {
		t.Fatalf("after unblocking: %s", got)
	}

	// Removed: contact, conversation and history go; a new invite works.
	if err := alice.RemoveContact(ctx, id); err != nil {
		t.Fatal(err)
	}
	if ks, _ := alice.Contacts(ctx); len(ks) != 1 || ks[0].Name != "carol" {
		t.Fatalf("contacts after removing bob: %+v", ks)
	}
	if ms, _ := alice.Messages(ctx, Query{}); strings.Contains(show(ms), "Bob") {
		t.Fatalf("bob's history outlived him: %s", show(ms))
	}
	if err := bob.RemoveContact(ctx, contactID(t, bob, "alice")); err != nil {
		t.Fatal(err)
	}
	introduce(t, alice, bob)
	send(t, bob, "alice", "back again")
	syncNow(t, alice)
	if got := show(unread(t, alice)); !strings.HasSuffix(got, "bob:back again]") {
		t.Fatalf("after removing and inviting again: %s", got)
	}
}

// TestChangePassphrase: the profile opens only with the new passphrase.
func TestChangePassphrase(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice := w.client(t, "alice", nil)
	if err := alice.ChangePassphrase([]byte("new passphrase")); err != nil {
		t.Fatal(err)
	}
	alice.Close()
	cfg := alice.cfg
	if _, err := Open(ctx, cfg); err == nil {
		t.Fatal("opened without the passphrase")
	}
	cfg.Passphrase = []byte("wrong")
	if _, err := Open(ctx, cfg); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: got %v", err)
	}
	cfg.Passphrase = []byte("new passphrase")
	c, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestBackupRestore moves bob's profile to a new machine with a backup:
// the restored profile has his history and goes on talking with alice.
func TestBackupRestore(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob := w.pair(t)
	send(t, bob, "alice", "before the move")
	var backup bytes.Buffer
	if err := bob.Backup(ctx, &backup, []byte("backup words")); err != nil {
		t.Fatal(err)
	}
	bob.Close()
	cfg := w.config(t, "bob-new-machine")
	cfg.Passphrase = []byte("device words")
	if _, err := Restore(ctx, cfg, bytes.NewReader(backup.Bytes()), []byte("guess")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("restore with the wrong passphrase: %v", err)
	}
	moved, err := Restore(ctx, cfg, bytes.NewReader(backup.Bytes()), []byte("backup words"))
	if err != nil {
		t.Fatal(err)
	}
	defer moved.Close()
	if ms, _ := moved.Messages(ctx, Query{}); show(ms) != "[me:before the move]" {
		t.Fatalf("restored history: %s", show(ms))
	}
	send(t, moved, "alice", "after the move")
	send(t, alice, "bob", "welcome back")
	syncNow(t, alice)
	syncNow(t, moved)
	if got := show(unread(t, alice)); got != "[bob:before the move bob:after the move]" {
		t.Fatalf("alice got %s", got)
	}
	if got := show(unread(t, moved)); got != "[alice:welcome back]" {
		t.Fatalf("the moved bob got %s", got)
	}
}

// TestUnknownKindKept: a message of a kind this Ferry does not know (from
// a newer one) is kept, shown as unsupported, and acknowledged as
// delivered; it is not dropped silently.
func TestUnknownKindKept(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob := w.pair(t)
	var id [16]byte
	aliceID := contactID(t, bob, "alice")
	err := bob.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		k, err := tx.Contact(int64(aliceID))
		if err != nil {
			return err
		}
		s, err := bob.a.Session(k)
		if err != nil {
			return err
		}
		if id, err = bob.a.NewID(); err != nil {
			return err
		}
		c := &content.Content{ID: id, Sent: bob.a.Now().UnixMilli(), Body: &content.Unknown{K: 200, Data: []byte("a kind from the future")}}
		if err := bob.a.Seal(tx, k, s, c); err != nil {
			return err
		}
		return saveContactSession(tx, k, s)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	syncNow(t, alice)
	got := unread(t, alice)
	if len(got) != 1 || got[0].ID != id || got[0].Kind != KindUnsupported || got[0].Body.(*Unsupported).Kind != 200 ||
		got[0].From != "bob" || !strings.Contains(got[0].Text(), "newer Ferry") {
		t.Fatalf("alice has %s", show(got))
	}
	// bob's relay holds alice's delivery receipt for it.
	if err := alice.MarkShown(ctx, got); err != nil {
		t.Fatal(err)
	}
	if n := len(w.relay.Pending(bob.a.Mailbox)); n == 0 {
		t.Fatal("no receipt for the unsupported message")
	}
}

// copyDir copies the files of a checked-in directory into a new one.
func copyDir(t *testing.T, from string) string {
	t.Helper()
	dir := t.TempDir()
	files, err := filepath.Glob(filepath.Join(from, "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestMigratedProfiles opens the profiles made by the first release
// (testdata/client/v1) with their relay brought back: alice and bob, on
// the new layout, receive what waited, deliver what was queued, go on
// talking in order, and alice's outstanding invite still works.
func TestMigratedProfiles(t *testing.T) {
	ctx := context.Background()
	w := &world{Harness: clienttest.New(t)}
	w.Clock.Set(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC))
	relayDir := copyDir(t, "testdata/client/v1/relay")
	st, err := sqlite.Open(ctx, filepath.Join(relayDir, "relay.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	w.relay = w.StartRelay(clienttest.RelayConfig{Addr: "127.0.0.1:47443", Key: relayKey(t, relayDir), Store: st,
		Limits: relay.Limits{TTL: 100 * 365 * 24 * time.Hour}})
	open := func(name string) *Client {
		c, err := Open(ctx, Config{Home: copyDir(t, "testdata/client/v1/"+name), Transports: w.Transports(), Now: w.Clock.Now})
		if err != nil {
			t.Fatalf("open %s's first-release profile: %v", name, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	alice, bob := open("alice"), open("bob")
	syncNow(t, alice) // also delivers her outbox
	if got := show(unread(t, alice)); got != "[bob:line one\nline two bob:waiting at the relay]" {
		t.Fatalf("alice's unread after the migration: %s", got)
	}
	syncNow(t, bob)
	if got := show(unread(t, bob)); got != "[alice:queued while the relay was down]" {
		t.Fatalf("bob's unread after the migration: %s", got)
	}
	send(t, bob, "alice", "on the new layout")
	syncNow(t, alice)
	if got := show(unread(t, alice)); !strings.HasSuffix(got, "bob:on the new layout]") {
		t.Fatalf("alice got %s", got)
	}
	inv, err := os.ReadFile("testdata/client/v1/alice-invite.txt")
	if err != nil {
		t.Fatal(err)
	}
	carol := w.client(t, "carol", nil)
	introduce(t, alice, carol) // a fresh invite works
	dave := w.client(t, "dave", nil)
	if _, err := dave.Accept(ctx, strings.TrimSpace(string(inv))); err != nil {
		t.Fatal(err)
	}
	syncNow(t, alice)
	if k, err := alice.FindContact(ctx, "dave"); err != nil || k.Status != ContactConfirmed {
		t.Fatalf("the invite made before the migration: dave is %+v (%v)", k, err)
	}
}

func relayKey(t *testing.T, dir string) channel.KeyPair {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "relay.key"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64Decode(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != 32 {
		t.Fatalf("relay key: %v", err)
	}
	k, err := channel.NewKeyPair([32]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestRestoreOldBackupNeverReusesKeys: bob restores a backup taken before
// he sent three more messages. The restored profile moves every session
// past the keys the original may have used, so its next message is
// encrypted under a key alice never saw, and she reads it. Before the
// fix the restored profile sent under the first of those three keys
// again (two plaintexts under one key), and alice, who had used it,
// dropped the message.
func TestRestoreOldBackupNeverReusesKeys(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice, bob := w.pair(t)
	var backup bytes.Buffer
	if err := bob.Backup(ctx, &backup, []byte("backup words")); err != nil {
		t.Fatal(err)
	}
	send(t, bob, "alice", "after the backup 1", "after the backup 2", "after the backup 3")
	syncNow(t, alice)
	if err := alice.MarkShown(ctx, unread(t, alice)); err != nil {
		t.Fatal(err)
	}
	bob.Close()
	restored, err := Restore(ctx, w.config(t, "bob-restored"), bytes.NewReader(backup.Bytes()), []byte("backup words"))
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	send(t, restored, "alice", "after the restore")
	syncNow(t, alice)
	if got := show(unread(t, alice)); got != "[bob:after the restore]" {
		t.Fatalf("alice got %s, want the restored profile's message", got)
	}
}
