package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/sqlite"
	"github.com/ferry-im/ferry/relay/storetest"
)

func openAt(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Config{
		Open: func(t *testing.T) relay.Store {
			return openAt(t, filepath.Join(t.TempDir(), "relay.db"))
		},
		Reopen: func(t *testing.T, s relay.Store) relay.Store {
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return openAt(t, s.(*sqlite.Store).Path())
		},
	})
}

func TestSchemaVersion(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "relay.db")
	s := openAt(t, path)
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRow("PRAGMA user_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != 2 {
		t.Fatalf("schema version %d after Open, want 2", v)
	}
	// Reopening an up-to-date database changes nothing.
	openAt(t, path).Close()
	// A database from a newer relay is refused, not misread.
	if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	if s, err := sqlite.Open(context.Background(), path, nil); err == nil {
		s.Close()
		t.Fatal("Open accepted a database with a newer schema")
	} else if !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open of a newer schema: %v, want an error saying it is newer", err)
	}
}

func TestFileMode(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "relay.db")
	s := openAt(t, path)
	defer s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("database mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestOpenBadPath(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"", filepath.Join(t.TempDir(), "x?mode=ro"), filepath.Join(t.TempDir(), "missing", "dir", "relay.db")} {
		if s, err := sqlite.Open(context.Background(), p, nil); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", p)
		}
	}
}

// TestGroupCommit checks that concurrent writes share transactions.
func TestGroupCommit(t *testing.T) {
	t.Parallel()
	s := openAt(t, filepath.Join(t.TempDir(), "relay.db"))
	defer s.Close()
	ctx := context.Background()
	mb := [16]byte{'g'}
	if err := s.SetToken(ctx, mb, [32]byte{1}); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	const n = 200
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			if _, _, err := s.Put(ctx, mb, relay.Envelope{ID: [16]byte{byte(i), byte(i >> 8)}, Data: []byte("x")}, relay.Quota{}); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	st := s.Stats()
	writes, batches := st.Writes-before.Writes, st.Batches-before.Batches
	if writes != n {
		t.Fatalf("Stats counted %d writes, want %d", writes, n)
	}
	if batches >= n/2 {
		t.Fatalf("%d concurrent Puts took %d transactions: no group commit", n, batches)
	}
	t.Logf("%d writes in %d transactions", writes, batches)
}

// TestExpireInChunks expires more rows than one chunk transaction takes.
func TestExpireInChunks(t *testing.T) {
	t.Parallel()
	s := openAt(t, filepath.Join(t.TempDir(), "relay.db"))
	defer s.Close()
	ctx := context.Background()
	mb := [16]byte{'e'}
	if err := s.SetToken(ctx, mb, [32]byte{1}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_800_000_000, 0)
	const n = 4500
	var wg sync.WaitGroup
	var acked []uint64
	var mu sync.Mutex
	for w := range 10 {
		wg.Go(func() {
			for i := w; i < n; i += 10 {
				seq, _, err := s.Put(ctx, mb, relay.Envelope{ID: [16]byte{byte(i), byte(i >> 8)}, Received: t0, Data: []byte("x")}, relay.Quota{})
				if err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					mu.Lock()
					acked = append(acked, seq)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if _, err := s.Ack(ctx, mb, acked); err != nil {
		t.Fatal(err)
	}
	keep, _, err := s.Put(ctx, mb, relay.Envelope{ID: [16]byte{'k', 'e', 'e', 'p'}, Received: t0.Add(time.Hour), Data: []byte("keep")}, relay.Quota{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Expire(ctx, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if want := n - len(acked); got != want {
		t.Fatalf("Expire removed %d pending envelopes, want %d", got, want)
	}
	envs, err := s.Pending(ctx, mb, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != 1 || envs[0].Seq != keep {
		t.Fatalf("pending after Expire: %d envelopes, want only seq %d", len(envs), keep)
	}
	if u, _ := s.Usage(ctx, mb); u != (relay.Usage{Count: 1, Bytes: 4}) {
		t.Fatalf("Usage after Expire = %+v, want {1 4}", u)
	}
}

// TestPutAsyncPollReady checks that ready turns true once the Put is
// committed, without wait being called, and that wait then returns the
// result at once; and that a Put on a closed store is ready at once.
func TestPutAsyncPollReady(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openAt(t, filepath.Join(t.TempDir(), "relay.db"))
	mb := [16]byte{1}
	if err := s.SetToken(ctx, mb, [32]byte{2}); err != nil {
		t.Fatal(err)
	}
	env := relay.Envelope{ID: [16]byte{3}, Received: time.UnixMilli(1e12), Data: []byte("x")}
	wait, ready := s.PutAsyncPoll(ctx, mb, env, relay.Quota{})
	for deadline := time.Now().Add(10 * time.Second); !ready(); {
		if time.Now().After(deadline) {
			t.Fatal("ready never reported the committed Put")
		}
		time.Sleep(time.Millisecond)
	}
	seq, dup, err := wait()
	if seq != 1 || dup || err != nil {
		t.Fatalf("wait = %d, %v, %v; want 1, false, nil", seq, dup, err)
	}
	s.Close()
	wait, ready = s.PutAsyncPoll(ctx, mb, env, relay.Quota{})
	if !ready() {
		t.Error("ready = false for a Put on a closed store, want true")
	}
	if _, _, err := wait(); err != relay.ErrClosed {
		t.Errorf("wait after Close = %v, want ErrClosed", err)
	}
}
