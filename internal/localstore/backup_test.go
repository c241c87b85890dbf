package localstore

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

func TestSetPassphrase(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := create(t, dir, nil)
	if err := s.Update(ctx, func(tx *Tx) error { return tx.PutProfile(&Profile{Name: "me"}) }); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPassphrase([]byte("new one")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(ctx, dir, Options{}); !errors.Is(err, ErrPassphraseRequired) {
		t.Fatalf("open without the new passphrase: got %v", err)
	}
	s, err := Open(ctx, dir, Options{Passphrase: []byte("new one")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetPassphrase(nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, dir, Options{})
	if err != nil {
		t.Fatalf("open after removing the passphrase: %v", err)
	}
	s.Close()
}

// fill stores a profile and enough messages for several backup chunks.
func fill(t *testing.T, s *Store) {
	t.Helper()
	err := s.Update(context.Background(), func(tx *Tx) error {
		if err := tx.PutProfile(&Profile{Name: "me", Identity: []byte("identity")}); err != nil {
			return err
		}
		for i := range 40 {
			m := &Message{ID: [16]byte{byte(i), 1}, Conversation: 1, Sender: 2, Sent: time.UnixMilli(int64(i)), Kind: 1, Body: bytes.Repeat([]byte{byte(i)}, 5000)}
			if _, err := tx.InsertMessage(m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBackupRestore(t *testing.T) {
	ctx := context.Background()
	s := create(t, t.TempDir(), nil)
	fill(t, s)
	var buf bytes.Buffer
	if err := s.Backup(ctx, &buf, []byte("backup pass")); err != nil {
		t.Fatal(err)
	}
	if buf.Len() < 3*backupChunk {
		t.Fatalf("backup of %d bytes: the test wants several chunks", buf.Len())
	}
	backup := buf.Bytes()
	dir := t.TempDir()
	r, err := Restore(ctx, dir, bytes.NewReader(backup), []byte("backup pass"), Options{Passphrase: []byte("device pass")})
	if err != nil {
		t.Fatal(err)
	}
	var ms []*Message
	var p *Profile
	err = r.Update(ctx, func(tx *Tx) (err error) {
		if p, err = tx.Profile(); err != nil {
			return err
		}
		ms, err = tx.Messages(MessageQuery{})
		return err
	})
	r.Close()
	if err != nil || p.Name != "me" || len(ms) != 40 || !bytes.Equal(ms[39].Body, bytes.Repeat([]byte{39}, 5000)) {
		t.Fatalf("restored profile %+v, %d messages, %v", p, len(ms), err)
	}
	if _, err := Open(ctx, dir, Options{}); !errors.Is(err, ErrPassphraseRequired) {
		t.Fatalf("the restored profile is not under the new passphrase: %v", err)
	}
	if _, err := Restore(ctx, dir, bytes.NewReader(backup), []byte("backup pass"), Options{}); !errors.Is(err, ErrExists) {
		t.Fatalf("restore over a profile: got %v", err)
	}
	flipped := bytes.Clone(backup)
	flipped[len(flipped)-100] ^= 1
	for _, tt := range []struct {
		name string
		b    []byte
		pass string
		want error
	}{
		{"wrong passphrase", backup, "guess", ErrWrongPassphrase},
		{"not a backup", []byte("hello, this is a text file and nothing more than that at all"), "backup pass", ErrNotBackup},
		{"truncated at a chunk", backup[:len(backup)-(len(backup)-len(backupMagic)-backupWrapped)%(backupChunk+16)], "backup pass", ErrCorrupt},
		{"truncated", backup[:len(backup)-10], "backup pass", ErrCorrupt},
		{"flipped", flipped, "backup pass", ErrCorrupt},
		{"trailing", append(bytes.Clone(backup), 0), "backup pass", ErrCorrupt},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Restore(ctx, t.TempDir(), bytes.NewReader(tt.b), []byte(tt.pass), Options{}); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// FuzzOpenStream: no input makes the chunk reader panic, and whatever it
// accepts was sealed by sealStream with its key (so it re-seals to the
// same bytes).
func FuzzOpenStream(f *testing.F) {
	key := bytes.Repeat([]byte{1}, 32)
	aead, _ := chacha20poly1305.New(key)
	for _, n := range []int{0, 1, backupChunk, backupChunk + 1} {
		var out bytes.Buffer
		sealStream(aead, []byte("ad"), bytes.NewReader(make([]byte, n)), &out)
		f.Add(out.Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var pt bytes.Buffer
		if err := openStream(aead, []byte("ad"), bytes.NewReader(b), &pt); err != nil {
			return
		}
		var again bytes.Buffer
		if err := sealStream(aead, []byte("ad"), bytes.NewReader(pt.Bytes()), &again); err != nil || !bytes.Equal(again.Bytes(), b) {
			t.Fatalf("accepted %d bytes that are not sealStream's output", len(b))
		}
	})
}
