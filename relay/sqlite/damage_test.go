package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/sqlite"
)

var damageBox = [16]byte{'d', 'a', 'm', 'a', 'g', 'e'}

// fill makes a database at path with n pending envelopes in damageBox
// and closes it.
func fill(t *testing.T, path string, n int) {
	t.Helper()
	s := openAt(t, path)
	ctx := context.Background()
	if err := s.SetToken(ctx, damageBox, [32]byte{1}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		env := relay.Envelope{ID: [16]byte{byte(i >> 8), byte(i)}, Received: time.Unix(1790000000, 0), Data: []byte(strings.Repeat("envelope ", 10))}
		if _, _, err := s.Put(ctx, damageBox, env, relay.Quota{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// pagesOf returns the numbers of the pages of one table or index (of the
// given dbstat page type, or all if empty) and the page size.
func pagesOf(t *testing.T, path, name, pageType string) ([]int64, int64) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var size int64
	if err := db.QueryRow("PRAGMA page_size").Scan(&size); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query("SELECT pageno FROM dbstat WHERE name = ? AND (? = '' OR pagetype = ?)", name, pageType, pageType)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var pages []int64
	for rows.Next() {
		var p int64
		rows.Scan(&p)
		pages = append(pages, p)
	}
	if len(pages) == 0 {
		t.Fatalf("no %s pages of %s", pageType, name)
	}
	return pages, size
}

// flipBits flips n bits, chosen by seed, in the bytes [from, to) of the file.
func flipBits(t *testing.T, path string, from, to int64, n int, seed uint64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 0))
	for range n {
		i := from + r.Int64N(to-from)
		b[i] ^= 1 << r.IntN(8)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// openDamaged opens path, which must be refused as damaged, and returns
// the error's text.
func openDamaged(t *testing.T, path string) string {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, nil)
	if err == nil {
		envs, _ := s.Pending(context.Background(), damageBox, 0, 1000)
		s.Close()
		t.Fatalf("Open accepted a damaged database (it serves %d envelopes)", len(envs))
	}
	if !errors.Is(err, sqlite.ErrDamaged) {
		t.Fatalf("Open = %v, want ErrDamaged", err)
	}
	return err.Error()
}

// TestOpenRefusesEmptyFile: before the fix a 0-byte relay.db was silently
// made into an empty database (300 pending messages gone, no error).
func TestOpenRefusesEmptyFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "relay.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	msg := openDamaged(t, path)
	if want := "open relay database " + path + ": relay database is damaged: the file is empty (0 bytes)"; msg != want {
		t.Fatalf("error %q, want %q", msg, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Fatalf("Open changed the refused file: %v, %v", fi, err)
	}
}

func TestOpenRefusesNotSQLite(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "relay.db")
	if err := os.WriteFile(path, []byte("this is not a database, but it is long enough"), 0o600); err != nil {
		t.Fatal(err)
	}
	if msg := openDamaged(t, path); !strings.HasSuffix(msg, "the file does not start like an SQLite database") {
		t.Fatalf("error %q", msg)
	}
}

func TestOpenMustExist(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "relay.db")
	_, err := sqlite.Open(context.Background(), path, &sqlite.Options{MustExist: true})
	if !errors.Is(err, sqlite.ErrMissing) {
		t.Fatalf("Open of a missing database with MustExist = %v, want ErrMissing", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Open with MustExist created the file")
	}
	fill(t, path, 1)
	s, err := sqlite.Open(context.Background(), path, &sqlite.Options{MustExist: true})
	if err != nil {
		t.Fatalf("Open of an existing database with MustExist: %v", err)
	}
	s.Close()
}

// TestOpenRefusesDamagedIndex flips 200 bits in the pages of the index
// that serves pending envelopes. Before the fix the relay opened such a
// database and delivered 1 of 300 envelopes without a word.
func TestOpenRefusesDamagedIndex(t *testing.T) {
	t.Parallel()
	for seed := range uint64(4) {
		path := filepath.Join(t.TempDir(), "relay.db")
		fill(t, path, 300)
		pages, size := pagesOf(t, path, "envelopes_seq", "leaf")
		p := pages[int(seed)%len(pages)]
		flipBits(t, path, (p-1)*size+100, p*size, 200, seed)
		msg := openDamaged(t, path)
		t.Logf("seed %d: %s", seed, msg)
		if !strings.Contains(msg, "integrity check") {
			t.Errorf("seed %d: error %q does not say what the check found", seed, msg)
		}
	}
}

// TestOpenRefusesDamagedTable flips bits in the envelopes table's
// interior pages.
func TestOpenRefusesDamagedTable(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "relay.db")
	fill(t, path, 300)
	pages, size := pagesOf(t, path, "envelopes", "internal")
	flipBits(t, path, (pages[0]-1)*size, pages[0]*size, 200, 7)
	openDamaged(t, path)
}

// TestCloseCheckpointsWAL checks that a closed store leaves everything in
// relay.db itself: before the fix SIGTERM left the last writes in the
// write-ahead log, so a copy of relay.db alone missed them.
func TestCloseCheckpointsWAL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.db")
	fill(t, path, 50)
	if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > 0 {
		t.Fatalf("relay.db-wal holds %d bytes after Close, want none", fi.Size())
	}
	copyPath := filepath.Join(t.TempDir(), "relay.db")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openAt(t, copyPath)
	defer s.Close()
	envs, err := s.Pending(context.Background(), damageBox, 0, 100)
	if err != nil || len(envs) != 50 {
		t.Fatalf("a copy of relay.db alone holds %d of 50 envelopes (%v)", len(envs), err)
	}
}

// TestRecoverDamagedIndex recovers a database whose index was damaged:
// the tables are whole, so every envelope comes back.
func TestRecoverDamagedIndex(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "relay.db")
	fill(t, path, 300)
	pages, size := pagesOf(t, path, "envelopes_seq", "leaf")
	flipBits(t, path, (pages[0]-1)*size+100, pages[0]*size, 200, 1)
	openDamaged(t, path)
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	rep, err := sqlite.Recover(context.Background(), path, now)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Envelopes != 300 || rep.Mailboxes != 1 || rep.Tokens != 1 || len(rep.Incomplete) != 0 {
		t.Fatalf("Recover = %+v, want 300 envelopes of 1 mailbox with its token, complete", rep)
	}
	if rep.Kept != path+".damaged-20261202-100000" {
		t.Fatalf("damaged file kept as %s", rep.Kept)
	}
	if _, err := os.Stat(rep.Kept); err != nil {
		t.Fatalf("the damaged file is gone: %v", err)
	}
	s := openAt(t, path)
	defer s.Close()
	ctx := context.Background()
	envs, err := s.Pending(ctx, damageBox, 0, 1000)
	if err != nil || len(envs) != 300 {
		t.Fatalf("after recovery %d of 300 envelopes pending (%v)", len(envs), err)
	}
	if u, _ := s.Usage(ctx, damageBox); u.Count != 300 {
		t.Fatalf("after recovery Usage.Count = %d, want 300", u.Count)
	}
	if ok, _ := s.HasToken(ctx, damageBox, [32]byte{1}); !ok {
		t.Fatal("the token was lost")
	}
	seq, _, err := s.Put(ctx, damageBox, relay.Envelope{ID: [16]byte{'n'}, Received: now, Data: []byte("x")}, relay.Quota{})
	if err != nil || seq != 301 {
		t.Fatalf("next seq after recovery = %d (%v), want 301", seq, err)
	}
}

// TestRecoverDamagedTable recovers a database whose envelopes table lost a
// leaf page: what is on other pages comes back, the counters match what
// came back, and the report says the table is incomplete.
func TestRecoverDamagedTable(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "relay.db")
	fill(t, path, 300)
	pages, size := pagesOf(t, path, "envelopes", "leaf")
	p := pages[len(pages)/2]
	flipBits(t, path, (p-1)*size, (p-1)*size+12, 40, 3) // the page header
	openDamaged(t, path)
	rep, err := sqlite.Recover(context.Background(), path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("recovered %+v", rep)
	if rep.Envelopes == 0 || rep.Envelopes >= 300 {
		t.Fatalf("recovered %d envelopes, want most but not all of 300", rep.Envelopes)
	}
	s := openAt(t, path)
	defer s.Close()
	envs, _ := s.Pending(context.Background(), damageBox, 0, 1000)
	if u, _ := s.Usage(context.Background(), damageBox); len(envs) != rep.Envelopes || u.Count != len(envs) {
		t.Fatalf("after recovery %d pending, Usage %d, report %d: they must agree", len(envs), u.Count, rep.Envelopes)
	}
}

// TestRecoverLostTokensReregisters: when the tokens table had damaged
// pages, every mailbox's owner must register again: its signed prekey is
// cleared, so the relay answers its owner's GetPrekeyCount NotFound and
// the client registers the whole mailbox again, tokens included. Before,
// a mailbox whose tokens were lost but whose prekeys survived went
// unnoticed by its owner while every sender to it was refused.
func TestRecoverLostTokensReregisters(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "relay.db")
	s := openAt(t, path)
	ctx := context.Background()
	boxes := [][16]byte{damageBox, {'o', 't', 'h', 'e', 'r'}}
	for i, mb := range boxes {
		if err := s.SetToken(ctx, mb, [32]byte{byte(i + 1)}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutPrekeys(ctx, mb, relay.PrekeyUpload{Signed: []byte("signed"), LastResort: []byte("last resort")}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	pages, size := pagesOf(t, path, "tokens", "")
	flipBits(t, path, (pages[0]-1)*size, (pages[0]-1)*size+12, 40, 7) // the page header
	openDamaged(t, path)
	rep, err := sqlite.Recover(ctx, path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("recovered %+v", rep)
	if !slices.Contains(rep.Incomplete, "tokens") || rep.Reregister != len(boxes) {
		t.Fatalf("report %+v: want tokens incomplete and %d mailboxes to register again", rep, len(boxes))
	}
	s = openAt(t, path)
	defer s.Close()
	for _, mb := range boxes {
		if _, err := s.Bundle(ctx, mb); !errors.Is(err, relay.ErrNotFound) {
			t.Errorf("Bundle of %q after recovery = %v, want ErrNotFound (so that its owner registers again)", mb[:5], err)
		}
	}
}
