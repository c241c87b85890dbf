package localstore

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// copyProfile copies a checked-in profile into a new directory.
func copyProfile(t *testing.T, from string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{KeyFile, DBFile} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestMigrateV1 opens alice's profile made by the first release (schema
// 1, testdata/client/v1) and checks that everything is where version 2
// keeps it: one direct conversation with bob, her counters, her three
// messages as text with their states (one unread), the outbox and the invite.
func TestMigrateV1(t *testing.T) {
	ctx := context.Background()
	dir := copyProfile(t, "../../testdata/client/v1/alice")
	s, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatalf("open a schema 1 profile: %v", err)
	}
	defer s.Close()
	err = s.Update(ctx, func(tx *Tx) error {
		ks, err := tx.Contacts()
		if err != nil || len(ks) != 1 || ks[0].Name != "bob" || ks[0].Status != Confirmed {
			t.Fatalf("contacts: %+v (%v)", ks, err)
		}
		conv, err := tx.DirectConversation(ks[0].ID)
		if err != nil {
			t.Fatalf("bob's conversation: %v", err)
		}
		sent, _ := tx.Counter(conv.ID, SenderSelf)
		recv, _ := tx.Counter(conv.ID, ks[0].ID)
		if sent != 2 || recv != 2 {
			t.Errorf("counters: sent %d, received %d; want 2 and 2", sent, recv)
		}
		ms, err := tx.Messages(MessageQuery{Conversation: conv.ID})
		if err != nil {
			return err
		}
		want := []struct {
			text  string
			self  bool
			state State
			n     uint64
		}{
			// Version 1 kept the counter of incoming messages only.
			{"hello bob", true, Read, 0}, {"hello alice", false, Read, 1},
			{"line one\nline two", false, Delivered, 2}, {"queued while the relay was down", true, Queued, 0},
		}
		if len(ms) != len(want) {
			t.Fatalf("got %d messages, want %d", len(ms), len(want))
		}
		for i, w := range want {
			m := ms[i]
			text := string(m.Body[8:])
			if text != w.text || m.Outgoing() != w.self || m.State != w.state || m.Kind != 1 ||
				binary.BigEndian.Uint64(m.Body) != w.n || m.N != w.n {
				t.Errorf("message %d: got %q self %v %v kind %d n %d, want %+v", i, text, m.Outgoing(), m.State, m.Kind, m.N, w)
			}
		}
		if n, err := tx.OutboxLen(); err != nil || n != 1 {
			t.Errorf("outbox: %d (%v), want 1", n, err)
		}
		if n, err := tx.Invites(); err != nil || n != 2 {
			t.Errorf("invites: %d (%v), want the outstanding one and bob's marker", n, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var ver []byte
	s.db.QueryRow(`SELECT v FROM meta WHERE k = 'schema'`).Scan(&ver)
	if string(ver) != strconv.Itoa(schemaVersion) {
		t.Fatalf("schema version after migration: %s", ver)
	}
	if err := s.Update(ctx, func(tx *Tx) error { _, err := tx.Transfers(TransferPending, true); return err }); err != nil {
		t.Fatalf("transfers after migration: %v", err)
	}
}

// TestNewerSchema: a profile from a newer Ferry is refused, untouched.
func TestNewerSchema(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := create(t, dir, nil)
	s.db.Exec(`UPDATE meta SET v = '99' WHERE k = 'schema'`)
	s.Close()
	if _, err := Open(ctx, dir, Options{}); err == nil {
		t.Fatal("opened a profile of schema 99")
	}
}
