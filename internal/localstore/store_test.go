package localstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func create(t *testing.T, dir string, pass []byte) *Store {
	t.Helper()
	s, err := Create(context.Background(), dir, Options{Passphrase: pass})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestCreateOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := create(t, dir, nil)
	want := &Profile{Name: "alice", RelayLink: "ferry://relay", Identity: []byte("secret identity"), Token: bytes.Repeat([]byte{7}, 32)}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.PutProfile(want) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Create(ctx, dir, Options{}); !errors.Is(err, ErrExists) {
		t.Fatalf("Create again: got %v, want ErrExists", err)
	}
	s2, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	var got *Profile
	if err := s2.Update(ctx, func(tx *Tx) (err error) { got, err = tx.Profile(); return }); err != nil {
		t.Fatal(err)
	}
	if got.Name != want.Name || !bytes.Equal(got.Identity, want.Identity) || !bytes.Equal(got.Token, want.Token) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := Open(ctx, t.TempDir(), Options{}); !errors.Is(err, ErrNoProfile) {
		t.Fatalf("Open empty dir: got %v, want ErrNoProfile", err)
	}
}

func TestPassphrase(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := create(t, dir, []byte("correct horse"))
	s.Close()
	before, _ := os.ReadFile(filepath.Join(dir, DBFile))
	tests := []struct {
		name string
		pass []byte
		want error
	}{
		{"wrong", []byte("battery staple"), ErrWrongPassphrase},
		{"missing", nil, ErrPassphraseRequired},
		{"empty", []byte{}, ErrWrongPassphrase},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(ctx, dir, Options{Passphrase: tt.pass})
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	after, _ := os.ReadFile(filepath.Join(dir, DBFile))
	if !bytes.Equal(before, after) {
		t.Fatal("a failed open changed the database")
	}
	s2, err := Open(ctx, dir, Options{Passphrase: []byte("correct horse")})
	if err != nil {
		t.Fatalf("right passphrase: %v", err)
	}
	s2.Close()

	plain := t.TempDir()
	create(t, plain, nil).Close()
	if _, err := Open(ctx, plain, Options{Passphrase: []byte("x")}); !errors.Is(err, ErrNoPassphrase) {
		t.Fatalf("passphrase on a plain profile: got %v, want ErrNoPassphrase", err)
	}
}

func TestKeyMismatch(t *testing.T) {
	ctx := context.Background()
	a, b := t.TempDir(), t.TempDir()
	create(t, a, nil).Close()
	create(t, b, nil).Close()
	key, _ := os.ReadFile(filepath.Join(b, KeyFile))
	if err := os.WriteFile(filepath.Join(a, KeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, a, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
}

// TestAtRest checks that secrets and message text never reach the
// database file in the clear.
func TestAtRest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := create(t, dir, nil)
	secrets := [][]byte{
		[]byte("IDENTITY-PRIVATE-KEY-MARKER"),
		[]byte("MESSAGE-TEXT-MARKER"),
		[]byte("CONTACT-NAME-MARKER"),
		[]byte("SESSION-STATE-MARKER"),
		[]byte("INVITE-SECRET-MARKER"),
		[]byte("ENVELOPE-MARKER"),
	}
	err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.PutProfile(&Profile{Name: "me", Identity: secrets[0]}); err != nil {
			return err
		}
		c := &Contact{Name: string(secrets[2]), Session: secrets[3]}
		if err := tx.PutContact(c); err != nil {
			return err
		}
		if _, err := tx.InsertMessage(&Message{ID: [16]byte{1}, Conversation: 1, Sender: c.ID, Sent: time.Now(), Kind: 1, Body: secrets[1]}); err != nil {
			return err
		}
		if err := tx.AddInvite(secrets[4], time.Now()); err != nil {
			return err
		}
		return tx.Enqueue(&Outgoing{ID: [16]byte{2}, Contact: c.ID, Created: time.Now(), Envelope: secrets[5]})
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, sec := range secrets {
			if bytes.Contains(b, sec) {
				t.Errorf("%s contains %q in the clear", filepath.Base(f), sec)
			}
		}
	}
}

// TestTamper swaps sealed message bodies between rows: both must fail to
// open instead of showing the other row's text.
func TestTamper(t *testing.T) {
	ctx := context.Background()
	s := create(t, t.TempDir(), nil)
	err := s.Update(ctx, func(tx *Tx) error {
		for i := byte(1); i <= 2; i++ {
			if _, err := tx.InsertMessage(&Message{ID: [16]byte{i}, Conversation: 1, Sender: 1, Sent: time.Now(), Body: []byte("text")}); err != nil {
				return err
			}
		}
		_, err := tx.tx.Exec(`UPDATE messages SET body = (SELECT body FROM messages WHERE seq = 2) WHERE seq = 1`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(ctx, func(tx *Tx) error { _, err := tx.Messages(MessageQuery{}); return err })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
}

func TestUpdateRollsBack(t *testing.T) {
	ctx := context.Background()
	s := create(t, t.TempDir(), nil)
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx *Tx) error {
		if _, err := tx.InsertMessage(&Message{ID: [16]byte{1}, Sent: time.Now(), Body: []byte("a")}); err != nil {
			return err
		}
		if err := tx.Enqueue(&Outgoing{ID: [16]byte{1}, Created: time.Now()}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
	var msgs []*Message
	var n int
	if err := s.Update(ctx, func(tx *Tx) (err error) {
		if msgs, err = tx.Messages(MessageQuery{}); err != nil {
			return err
		}
		n, err = tx.OutboxLen()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 0 || n != 0 {
		t.Fatalf("after rollback: %d messages, %d queued; want 0, 0", len(msgs), n)
	}
}

func TestMessagesAndStates(t *testing.T) {
	ctx := context.Background()
	s := create(t, t.TempDir(), nil)
	err := s.Update(ctx, func(tx *Tx) error {
		m := &Message{ID: [16]byte{9}, Conversation: 3, Sender: SenderSelf, Sent: time.UnixMilli(1000), Kind: 1, Body: []byte("hi")}
		if ok, err := tx.InsertMessage(m); !ok || err != nil {
			return errors.Join(errors.New("first insert failed"), err)
		}
		if ok, err := tx.InsertMessage(&Message{ID: [16]byte{9}, Body: []byte("dup")}); ok || err != nil {
			return errors.Join(errors.New("duplicate insert accepted"), err)
		}
		in := &Message{ID: [16]byte{8}, Conversation: 3, Sender: 5, Sent: time.UnixMilli(2000), State: Delivered, Kind: 1}
		if _, err := tx.InsertMessage(in); err != nil {
			return err
		}
		for _, step := range []struct {
			s    State
			want bool
		}{{Sent, true}, {Delivered, true}, {Sent, false}, {Read, true}, {Read, false}} {
			moved, err := tx.AdvanceState(m.ID, 3, true, step.s)
			if err != nil {
				return err
			}
			if moved != step.want {
				t.Errorf("advance to %v: got %v, want %v", step.s, moved, step.want)
			}
		}
		if moved, _ := tx.AdvanceState(m.ID, 4, true, Failed); moved {
			t.Error("another conversation moved the message's state")
		}
		if moved, _ := tx.AdvanceState(in.ID, 3, true, Read); moved {
			t.Error("an incoming message moved as if outgoing")
		}
		got, err := tx.Messages(MessageQuery{Conversation: 3})
		if err != nil {
			return err
		}
		if len(got) != 2 || string(got[0].Body) != "hi" || got[0].State != Read || !got[0].Outgoing() || got[0].Sent.UnixMilli() != 1000 || got[0].Kind != 1 {
			t.Errorf("got %+v", got[0])
		}
		if got, _ := tx.Messages(MessageQuery{Incoming: true}); len(got) != 1 || got[0].ID != in.ID {
			t.Errorf("incoming filter: got %d messages, want the one", len(got))
		}
		if got, _ := tx.Messages(MessageQuery{Before: in.Seq}); len(got) != 1 || got[0].ID != m.ID {
			t.Errorf("before filter: got %+v", got)
		}
		unread, err := tx.Unread()
		if err != nil || unread[3] != 1 || len(unread) != 1 {
			t.Errorf("unread: got %v (%v), want one in conversation 3", unread, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOutboxSeenInvites(t *testing.T) {
	ctx := context.Background()
	s := create(t, t.TempDir(), nil)
	err := s.Update(ctx, func(tx *Tx) error {
		for i := byte(1); i <= 3; i++ {
			if err := tx.Enqueue(&Outgoing{ID: [16]byte{i}, Contact: 1, Created: time.Now(), Envelope: []byte{i}}); err != nil {
				return err
			}
		}
		if ok, _ := tx.Dequeue([16]byte{2}); !ok {
			t.Error("dequeue 2: not found")
		}
		if ok, _ := tx.Dequeue([16]byte{2}); ok {
			t.Error("dequeue 2 twice: found")
		}
		q, err := tx.Outbox(0)
		if err != nil {
			return err
		}
		if len(q) != 2 || q[0].ID[0] != 1 || q[1].ID[0] != 3 || !bytes.Equal(q[1].Envelope, []byte{3}) {
			t.Errorf("outbox order: got %+v", q)
		}

		now := time.UnixMilli(5000)
		if fresh, _ := tx.MarkSeen([16]byte{1}, now); !fresh {
			t.Error("first MarkSeen not fresh")
		}
		if fresh, _ := tx.MarkSeen([16]byte{1}, now); fresh {
			t.Error("second MarkSeen fresh")
		}
		if n, _ := tx.ForgetSeen(now.Add(time.Millisecond)); n != 1 {
			t.Errorf("ForgetSeen: got %d, want 1", n)
		}

		if err := tx.AddInvite([]byte("s1"), now); err != nil {
			return err
		}
		if ok, _ := tx.TakeInvite([]byte("s2")); ok {
			t.Error("took an unknown invite")
		}
		if ok, _ := tx.TakeInvite([]byte("s1")); !ok {
			t.Error("outstanding invite not found")
		}
		if ok, _ := tx.TakeInvite([]byte("s1")); ok {
			t.Error("invite taken twice")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestUnwrapKeyRejects(t *testing.T) {
	for _, tt := range []struct {
		name string
		file []byte
	}{
		{"empty", nil},
		{"version", []byte{2, 0}},
		{"kind", []byte{1, 9}},
		{"short plain", []byte{1, 0, 1, 2}},
		{"short argon", []byte{1, 1, 0}},
		{"huge memory", append([]byte{1, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 1}, make([]byte, argonFileSize-11)...)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := unwrapKey(tt.file, []byte("p")); err == nil {
				t.Fatal("got nil error")
			}
		})
	}
}

// FuzzUnwrapKey checks that no key file makes the parser panic or accept
// a key under the wrong passphrase, and that a plain key file round-trips.
func FuzzUnwrapKey(f *testing.F) {
	_, plain, _ := newKeyFile(bytes.NewReader(bytes.Repeat([]byte{1}, 64)), nil)
	f.Add(plain)
	f.Add([]byte{1, 1})
	f.Add(append([]byte{1, 1, 0, 0, 0, 1, 0, 0, 0, 8, 1}, make([]byte, argonFileSize-11)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Keep Argon2id cheap: cap memory and time as a real file could
		// not be trusted to do.
		if len(b) >= 11 && b[1] == kindArgon2id {
			b = bytes.Clone(b)
			b[2], b[3], b[4], b[5] = 0, 0, 0, 1
			b[6], b[7], b[8], b[9] = 0, 0, 0, 64
			b[10] = 1
		}
		key, err := unwrapKey(b, nil)
		if err != nil {
			if key != nil {
				t.Fatal("key with an error")
			}
		} else if len(key) != keySize || !bytes.Equal(append([]byte{keyFileVersion, kindPlain}, key...), b) {
			t.Fatalf("plain key file %x gave key %x", b, key)
		}
		if key, err := unwrapKey(b, []byte("p")); err == nil && len(key) != keySize {
			t.Fatalf("key of %d bytes", len(key))
		}
	})
}

func TestHeldMessages(t *testing.T) {
	ctx := context.Background()
	s := create(t, t.TempDir(), nil)
	err := s.Update(ctx, func(tx *Tx) error {
		for _, m := range []*Message{
			{ID: [16]byte{3}, Conversation: 1, Sender: 7, N: 3, Held: true, Body: []byte("three")},
			{ID: [16]byte{1}, Conversation: 1, Sender: 7, N: 1, Body: []byte("one")},
			{ID: [16]byte{2}, Conversation: 1, Sender: 7, N: 2, Held: true, Body: []byte("two")},
			{ID: [16]byte{4}, Conversation: 1, Sender: 8, N: 9, Held: true, Body: []byte("other sender")},
		} {
			m.Sent = time.Now()
			if _, err := tx.InsertMessage(m); err != nil {
				return err
			}
		}
		visible, err := tx.Messages(MessageQuery{})
		if err != nil {
			return err
		}
		if len(visible) != 1 || string(visible[0].Body) != "one" {
			t.Errorf("visible before release: %+v", visible)
		}
		held, err := tx.HeldMessages(1, 7)
		if err != nil {
			return err
		}
		if len(held) != 2 || held[0].N != 2 || held[1].N != 3 || !held[0].Held {
			t.Fatalf("held: %+v", held)
		}
		for _, m := range held {
			if err := tx.Release(m); err != nil {
				return err
			}
		}
		visible, err = tx.Messages(MessageQuery{})
		if err != nil {
			return err
		}
		var got []string
		for _, m := range visible {
			got = append(got, string(m.Body))
		}
		if strings.Join(got, " ") != "one two three" {
			t.Errorf("after release: got %q, want one two three in order", got)
		}
		if held, _ := tx.AllHeld(); len(held) != 1 || held[0].Sender != 8 {
			t.Errorf("still held: %+v, want the other sender's", held)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentUpdates runs transactions from several goroutines while
// their statements are first prepared: none may wait for another forever
// (the store has one connection, and a transaction holding it may need a
// statement another goroutine is preparing).
func TestConcurrentUpdates(t *testing.T) {
	ctx := context.Background()
	s := create(t, t.TempDir(), nil)
	done := make(chan error, 4)
	for g := range 4 {
		go func() {
			var err error
			for i := 0; i < 50 && err == nil; i++ {
				err = s.Update(ctx, func(tx *Tx) error {
					if err := tx.SetCursor(fmt.Sprint("c", g), int64(i)); err != nil {
						return err
					}
					_, err := tx.Messages(MessageQuery{Conversation: int64(i % 3), Incoming: i%2 == 0, Limit: i % 4, Last: g%2 == 0})
					return err
				})
			}
			done <- err
		}()
	}
	for range 4 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("concurrent transactions stuck")
		}
	}
}

// TestDataVersion: a commit by another Store of the same profile changes
// the data version; a read does not.
func TestDataVersion(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, err := Create(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	v1, err := a.DataVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Update(ctx, func(tx *Tx) error { return tx.SetCursor("x", 1) }); err != nil {
		t.Fatal(err)
	}
	v2, _ := a.DataVersion(ctx)
	if v2 == v1 {
		t.Fatal("data version unchanged by the other store's commit")
	}
	if v3, _ := a.DataVersion(ctx); v3 != v2 {
		t.Fatal("data version changed without a commit")
	}
}
