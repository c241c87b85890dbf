package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
)

// TestMigrateFromV1 opens a version-1 database with a token, a pending
// envelope and an acknowledged one, and checks that the token still
// authorises, the pending envelope is still pending and the acknowledged
// id is still recognised, with nothing of it kept but its mailbox, id and
// day.
func TestMigrateFromV1(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "relay.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	mb := []byte("mailbox-16-bytes")
	tok := [32]byte{7}
	for _, q := range []string{migrations[0] + "; PRAGMA user_version = 1;",
		`INSERT INTO mailboxes (id, token, next_seq, count, bytes) VALUES (?1, ?2, 3, 1, 4)`,
		`INSERT INTO envelopes VALUES (?1, 1, CAST('acked-id-16bytes' AS BLOB), 1790000000123, 5, NULL)`,
		`INSERT INTO envelopes VALUES (?1, 2, CAST('pending-16-bytes' AS BLOB), 1790000000456, 4, CAST('data' AS BLOB))`,
	} {
		if _, err := db.Exec(q, mb, tok[:]); err != nil {
			t.Fatalf("%.40s: %v", q, err)
		}
	}
	db.Close()
	s, err := Open(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if ok, err := s.HasToken(ctx, [16]byte(mb), tok); err != nil || !ok {
		t.Fatalf("HasToken after migration = (%v, %v), want true", ok, err)
	}
	envs, err := s.Pending(ctx, [16]byte(mb), 0, 10)
	if err != nil || len(envs) != 1 || envs[0].Seq != 2 || string(envs[0].Data) != "data" {
		t.Fatalf("pending after migration = %+v (%v), want seq 2", envs, err)
	}
	_, dup, err := s.Put(ctx, [16]byte(mb), relay.Envelope{ID: [16]byte([]byte("acked-id-16bytes")), Received: time.Now(), Data: []byte("x")}, relay.Quota{})
	if err != nil || !dup {
		t.Fatalf("retry of an id acknowledged before the migration = (dup %v, %v), want a duplicate", dup, err)
	}
	seq, dup, err := s.Put(ctx, [16]byte(mb), relay.Envelope{ID: [16]byte{'n'}, Received: time.Now(), Data: []byte("x")}, relay.Quota{})
	if err != nil || dup || seq != 3 {
		t.Fatalf("new envelope after migration = (%d, %v, %v), want seq 3", seq, dup, err)
	}
	s.Close()
	db, err = sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM envelopes WHERE data IS NULL`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d tombstones left in envelopes (%v), want 0", n, err)
	}
	var day int64
	if err := db.QueryRow(`SELECT day FROM acked`).Scan(&day); err != nil || day != 1790000000123/86400000 {
		t.Fatalf("acked day = %d (%v), want %d", day, err, 1790000000123/86400000)
	}
}
