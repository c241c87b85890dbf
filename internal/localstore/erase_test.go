package localstore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSecureDeletePragma reads back the pragmas open sets: secure_delete
// must be on for every connection.
func TestSecureDeletePragma(t *testing.T) {
	s := create(t, t.TempDir(), nil)
	var got int
	if err := s.db.QueryRow(`PRAGMA secure_delete`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != 1 {
		t.Fatalf("secure_delete = %d, want 1", got)
	}
}

// rawColumn returns the sealed bytes of one column as stored.
func rawColumn(t *testing.T, s *Store, query string, args ...any) []byte {
	t.Helper()
	var b []byte
	if err := s.db.QueryRow(query, args...).Scan(&b); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return b
}

// leftovers returns the profile files holding any 16-byte-aligned 16-byte
// window of old: a surviving fragment of 31 bytes or more is found.
func leftovers(t *testing.T, dir string, old []byte) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+16 <= len(old); i += 16 {
			if bytes.Contains(b, old[i:i+16]) {
				out = append(out, filepath.Base(f))
				break
			}
		}
	}
	return out
}

// erasure is one kind of secret for TestErasedOnDisk.
type erasure struct {
	name string
	// put stores the first version and returns the query reading its
	// sealed bytes; replace changes or deletes it.
	put     func(tx *Tx) (query string, args []any, err error)
	replace func(tx *Tx) error
}

// erasures are the secrets TestErasedOnDisk replaces or deletes.
func erasures() []erasure {
	return []erasure{
		{
			name: "session state",
			put: func(tx *Tx) (string, []any, error) {
				c := &Contact{Name: "bob", Session: bytes.Repeat([]byte("old chain key "), 40)}
				err := tx.PutContact(c)
				return `SELECT data FROM contacts WHERE id = ?`, []any{c.ID}, err
			},
			replace: func(tx *Tx) error {
				c, err := tx.Contact(1)
				if err != nil {
					return err
				}
				c.Session = bytes.Repeat([]byte("new"), 100)
				return tx.PutContact(c)
			},
		},
		{
			name: "overflowing session state",
			put: func(tx *Tx) (string, []any, error) {
				c := &Contact{Name: "bob", Session: bytes.Repeat([]byte("skipped message keys "), 1000)}
				err := tx.PutContact(c)
				return `SELECT data FROM contacts WHERE id = ?`, []any{c.ID}, err
			},
			replace: func(tx *Tx) error {
				c, err := tx.Contact(1)
				if err != nil {
					return err
				}
				c.Session = []byte("small new state")
				return tx.PutContact(c)
			},
		},
		{
			name: "consumed prekey",
			put: func(tx *Tx) (string, []any, error) {
				err := tx.PutProfile(&Profile{Name: "me", Prekeys: bytes.Repeat([]byte("one-time prekey "), 200)})
				return `SELECT data FROM profile WHERE id = 1`, nil, err
			},
			replace: func(tx *Tx) error {
				return tx.PutProfile(&Profile{Name: "me", Prekeys: bytes.Repeat([]byte("one-time prekey "), 199)})
			},
		},
		{
			name: "taken invite",
			put: func(tx *Tx) (string, []any, error) {
				err := tx.AddInvite([]byte("invite secret"), time.Now())
				return `SELECT data FROM invites`, nil, err
			},
			replace: func(tx *Tx) error {
				_, err := tx.TakeInvite([]byte("invite secret"))
				return err
			},
		},
	}
}

// TestErasedOnDisk replaces or deletes each kind of secret (a session state
// small enough to stay on its page and one large enough to overflow, the
// prekey set in the profile, an invite secret) and checks that no fragment
// of the old ciphertext is left in any file of the profile directory (the
// database, its WAL and its shared-memory index): right after the update
// returns, as a device seized or killed while running would show it, and
// after Close.
func TestErasedOnDisk(t *testing.T) {
	ctx := context.Background()
	for _, tt := range erasures() {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := create(t, dir, nil)
			var query string
			var args []any
			if err := s.Update(ctx, func(tx *Tx) (err error) { query, args, err = tt.put(tx); return }); err != nil {
				t.Fatal(err)
			}
			old := rawColumn(t, s, query, args...)
			if got := leftovers(t, dir, old); len(got) == 0 {
				t.Fatal("the first version is in no file: the scan cannot find anything")
			}
			// Unrelated writes between, so the old bytes sit in more than
			// one place (WAL frames, checkpointed pages).
			for i := range 3 {
				if err := s.Update(ctx, func(tx *Tx) error { return tx.SetCursor("x", int64(i)) }); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Update(ctx, tt.replace); err != nil {
				t.Fatal(err)
			}
			if got := leftovers(t, dir, old); len(got) > 0 {
				t.Errorf("while open, old ciphertext left in %v", got)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if got := leftovers(t, dir, old); len(got) > 0 {
				t.Errorf("after Close, old ciphertext left in %v", got)
			}
		})
	}
}

// TestOpenErasesLeftWAL stands for a process killed between a commit and
// its checkpoint: the replacing write is committed without Update's
// checkpoint and the store is not closed. Opening the profile again must
// erase the old frames from the WAL.
func TestOpenErasesLeftWAL(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := create(t, dir, nil)
	c := &Contact{Name: "bob", Session: bytes.Repeat([]byte("old root key "), 50)}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.PutContact(c) }); err != nil {
		t.Fatal(err)
	}
	old := rawColumn(t, s, `SELECT data FROM contacts WHERE id = ?`, c.ID)
	if _, err := s.db.Exec(`UPDATE contacts SET data = x'00' WHERE id = ?`, c.ID); err != nil {
		t.Fatal(err)
	}
	if got := leftovers(t, dir, old); len(got) == 0 {
		t.Fatal("without a checkpoint the old ciphertext is in no file: the test proves nothing")
	}
	s2, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := leftovers(t, dir, old); len(got) > 0 {
		t.Errorf("after Open, old ciphertext left in %v", got)
	}
}
