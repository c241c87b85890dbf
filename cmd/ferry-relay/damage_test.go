package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/wire"
	_ "modernc.org/sqlite"
)

// stop sends SIGTERM and waits for the relay to exit.
func (p *relayProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		p.exited <- err
		if err != nil {
			t.Fatalf("ferry-relay after SIGTERM: %v\n%s", err, p.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ferry-relay did not stop within 30s of SIGTERM")
	}
}

// runFails runs bin with args and returns its stderr, failing unless it
// exits with status 1.
func runFails(t *testing.T, bin string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	// A relay that starts instead of refusing is killed after 30 s.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || ctx.Err() != nil {
		t.Fatalf("ferry-relay %v: %v, want exit status 1; stderr:\n%s", args, err, stderr.String())
	}
	return stderr.String()
}

// fillRelay runs the relay in data, stores n envelopes for a new mailbox
// and stops it with SIGTERM. It returns the mailbox owner's key and token.
func fillRelay(t *testing.T, bin, data string, n int) (channel.KeyPair, [32]byte) {
	t.Helper()
	r := startRelay(t, bin, "--data", data, "--listen", "tcp=127.0.0.1:0")
	owner := mustKeyPair(t)
	tok := sha256.Sum256([]byte("damage token"))
	p := connect(t, r.link, owner)
	p.send(wire.SetToken{ReqID: 1, Token: tok})
	expectMsg[wire.OK](p)
	s := connect(t, r.link, mustKeyPair(t))
	for i := range n {
		s.send(wire.Send{ID: [16]byte{'d', byte(i >> 8), byte(i)}, To: channel.MailboxID(owner.Public), Token: tok, Envelope: bytes.Repeat([]byte{'e'}, 100)})
		expectMsg[wire.SendOK](s)
	}
	r.stop(t)
	return owner, tok
}

// delivered runs the relay in data and counts what the owner is delivered.
func delivered(t *testing.T, bin, data string, owner channel.KeyPair) int {
	t.Helper()
	r := startRelay(t, bin, "--data", data, "--listen", "tcp=127.0.0.1:0")
	defer r.stop(t)
	p := connect(t, r.link, owner)
	p.send(wire.Subscribe{ReqID: 2})
	n := 0
	for {
		switch m := p.recv().(type) {
		case wire.Deliver:
			n++
		case wire.OK:
			return n
		default:
			t.Fatalf("got %T %+v", m, m)
		}
	}
}

// TestSIGTERMCheckpointsWAL: before the fix the relay stopped by SIGTERM
// left its last writes in relay.db-wal, so a backup of relay.db alone
// missed them.
func TestSIGTERMCheckpointsWAL(t *testing.T) {
	t.Parallel()
	bin := buildRelay(t)
	data := filepath.Join(t.TempDir(), "data")
	fillRelay(t, bin, data, 20)
	if fi, err := os.Stat(filepath.Join(data, dbFile+"-wal")); err == nil && fi.Size() > 0 {
		t.Fatalf("relay.db-wal holds %d bytes after SIGTERM, want none", fi.Size())
	}
	db, err := sql.Open("sqlite", filepath.Join(data, dbFile)+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM envelopes").Scan(&n); err != nil || n != 20 {
		t.Fatalf("relay.db holds %d of 20 envelopes (%v)", n, err)
	}
}

// TestEmptyDatabaseRefused: before the fix a 0-byte relay.db was replaced
// by an empty database without a word (300 waiting messages gone).
func TestEmptyDatabaseRefused(t *testing.T) {
	t.Parallel()
	bin := buildRelay(t)
	data := filepath.Join(t.TempDir(), "data")
	owner, _ := fillRelay(t, bin, data, 3)
	db := filepath.Join(data, dbFile)
	if err := os.Truncate(db, 0); err != nil {
		t.Fatal(err)
	}
	got := runFails(t, bin, "--data", data, "--listen", "tcp=127.0.0.1:0")
	want := "ferry-relay: relay database " + db + " is empty (0 bytes): restore it from your backup, or run \"ferry-relay --data " + data + " --new-database\" to start with an empty one (the messages waiting on the relay are then lost)\n"
	if got != want {
		t.Fatalf("stderr:\n%s\nwant:\n%s", got, want)
	}
	if fi, err := os.Stat(db); err != nil || fi.Size() != 0 {
		t.Fatal("the refused database was changed")
	}
	// The operator chooses to start empty; the empty file is kept aside.
	r := startRelay(t, bin, "--data", data, "--listen", "tcp=127.0.0.1:0", "--new-database")
	r.stop(t)
	kept, _ := filepath.Glob(db + ".replaced-*")
	if len(kept) == 0 || !slices.ContainsFunc(kept, func(k string) bool { return !strings.HasSuffix(k, "-wal") && !strings.HasSuffix(k, "-shm") }) {
		t.Fatalf("kept aside: %v, want the old file", kept)
	}
	if n := delivered(t, bin, data, owner); n != 0 {
		t.Fatalf("%d delivered from a new database", n)
	}
}

func TestMissingDatabaseRefused(t *testing.T) {
	t.Parallel()
	bin := buildRelay(t)
	data := filepath.Join(t.TempDir(), "data")
	fillRelay(t, bin, data, 1)
	db := filepath.Join(data, dbFile)
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	got := runFails(t, bin, "--data", data, "--listen", "tcp=127.0.0.1:0")
	want := "ferry-relay: relay database " + db + " is missing, but " + data + " holds this relay's key, so it ran here before: restore relay.db from your backup, or run \"ferry-relay --data " + data + " --new-database\" to start with an empty one (the messages waiting on the relay are then lost)\n"
	if got != want {
		t.Fatalf("stderr:\n%s\nwant:\n%s", got, want)
	}
	if _, err := os.Stat(db); err == nil {
		t.Fatal("the relay created a database although it refused to start")
	}
}

// TestDamagedDatabaseRefusedAndRecovered damages an index of a database
// holding 300 waiting envelopes: before the fix the relay started and
// delivered 1 of 300 without an error. Now it refuses to start, says
// what to do, and "ferry-relay recover" brings all 300 back.
func TestDamagedDatabaseRefusedAndRecovered(t *testing.T) {
	t.Parallel()
	bin := buildRelay(t)
	data := filepath.Join(t.TempDir(), "data")
	owner, _ := fillRelay(t, bin, data, 300)
	db := filepath.Join(data, dbFile)
	damageIndex(t, db)
	got := runFails(t, bin, "--data", data, "--listen", "tcp=127.0.0.1:0")
	prefix := "ferry-relay: relay database " + db + " is damaged (SQLite's integrity check "
	suffix := "): stop the relay, copy " + data + " somewhere safe, then run \"ferry-relay recover --data " + data + "\" to rebuild it from what can still be read (see docs/operations.md, \"After damage\")\n"
	if !strings.HasPrefix(got, prefix) || !strings.HasSuffix(got, suffix) {
		t.Fatalf("stderr:\n%s\nwant:\n%s...%s", got, prefix, suffix)
	}
	out, err := exec.Command(bin, "recover", "--data", data).Output()
	if err != nil {
		t.Fatalf("ferry-relay recover: %v", err)
	}
	if want := "recovered " + db + ": 1 mailboxes, 300 waiting envelopes, 0 acknowledged message ids, 1 delivery tokens, 0 one-time prekeys; the damaged database is kept as " + db + ".damaged-"; !strings.HasPrefix(string(out), want) {
		t.Fatalf("recover printed:\n%s\nwant it to start:\n%s", out, want)
	}
	if n := delivered(t, bin, data, owner); n != 300 {
		t.Fatalf("%d of 300 delivered after recovery", n)
	}
	out, err = exec.Command(bin, "recover", "--data", data).Output()
	if err != nil || !strings.Contains(string(out), "nothing to recover") {
		t.Fatalf("recover of a sound database: %v\n%s", err, out)
	}
}

// damageIndex flips 200 bits in a leaf page of the index of pending
// envelopes.
func damageIndex(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var page, size int64
	err = db.QueryRow("SELECT pageno FROM dbstat WHERE name = 'envelopes_seq' AND pagetype = 'leaf' LIMIT 1").Scan(&page)
	if err == nil {
		err = db.QueryRow("PRAGMA page_size").Scan(&size)
	}
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	x := uint64(12345)
	for range 200 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		i := (page-1)*size + 100 + int64(x%uint64(size-100))
		b[i] ^= 1 << (x >> 60 % 8)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
