package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

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
	if v != 1 {
		t.Fatalf("schema version %d after Open, want 1", v)
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
