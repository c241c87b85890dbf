package blobfs_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/blobfs"
	"github.com/ferry-im/ferry/relay/blobtest"
)

func openAt(t *testing.T, dir string) *blobfs.Store {
	t.Helper()
	s, err := blobfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	dirs := map[relay.BlobStore]string{}
	blobtest.Run(t, blobtest.Config{
		Open: func(t *testing.T) relay.BlobStore {
			dir := t.TempDir()
			s := openAt(t, dir)
			dirs[s] = dir
			return s
		},
		Reopen: func(t *testing.T, s relay.BlobStore) relay.BlobStore {
			s.Close()
			again := openAt(t, dirs[s])
			dirs[again] = dirs[s]
			return again
		},
	})
}

// TestDamagedMetadata: a blob whose metadata file is damaged is dropped
// at Open (its upload starts again), and temporary files are removed.
func TestDamagedMetadata(t *testing.T) {
	dir := t.TempDir()
	s := openAt(t, dir)
	ctx := context.Background()
	for _, id := range [][16]byte{{1}, {2}} {
		if _, err := s.Create(ctx, id, [16]byte{9}, 10, time.Now(), relay.BlobQuota{}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	metas, _ := filepath.Glob(filepath.Join(dir, "*", "01*.meta"))
	if len(metas) != 1 {
		t.Fatalf("metadata files of blob 1: %v", metas)
	}
	os.WriteFile(metas[0], []byte("garbage"), 0o600)
	os.WriteFile(metas[0]+".tmp", []byte("half-written"), 0o600)
	s = openAt(t, dir)
	defer s.Close()
	if _, err := s.Info(ctx, [16]byte{1}); err == nil {
		t.Error("the damaged blob is still there")
	}
	if _, err := s.Info(ctx, [16]byte{2}); err != nil {
		t.Errorf("the sound blob: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*", "01*")); len(left) != 0 {
		t.Errorf("files left of the damaged blob: %v", left)
	}
}

// crashSize is the blob the child writes in TestKill9.
const crashSize = 64 << 20

// TestKill9 writes a blob from a child process in 64 KiB pieces, printing
// the offset each Write acknowledged, kills it with SIGKILL mid-way, and
// checks that the reopened store has at least every acknowledged byte,
// and exactly the bytes written, then completes the blob.
func TestKill9(t *testing.T) {
	if dir := os.Getenv("FERRY_BLOBFS_CHILD"); dir != "" {
		writeUntilKilled(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$")
	cmd.Env = append(os.Environ(), "FERRY_BLOBFS_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := int64(-1)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		n, err := strconv.ParseInt(strings.TrimSpace(sc.Text()), 10, 64)
		if err != nil {
			continue
		}
		acked = n
		if acked >= crashSize/4 {
			cmd.Process.Kill()
			break
		}
	}
	cmd.Wait()
	if acked < crashSize/4 {
		t.Fatalf("the child acknowledged only %d bytes", acked)
	}
	s := openAt(t, dir)
	defer s.Close()
	info, err := s.Info(context.Background(), crashID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Stored < acked || info.Complete {
		t.Fatalf("after kill -9: stored %d, complete %v; want at least the %d acknowledged", info.Stored, info.Complete, acked)
	}
	data := blobtest.Data(crashSize, 9)
	info = blobtest.WriteFrom(t, s, crashID, data, int(info.Stored), 1<<16)
	if !info.Complete || info.Digest != sha256.Sum256(data) {
		t.Fatalf("resumed after kill -9: got %+v, want the whole blob's digest", info)
	}
}

var crashID = [16]byte{'c', 'r', 'a', 's', 'h'}

func writeUntilKilled(dir string) {
	s, err := blobfs.Open(dir)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if _, err := s.Create(ctx, crashID, [16]byte{1}, crashSize, time.Now(), relay.BlobQuota{}); err != nil {
		panic(err)
	}
	data := blobtest.Data(crashSize, 9)
	w := bufio.NewWriter(os.Stdout)
	for off := 0; off < crashSize; off += 1 << 16 {
		if _, _, err := s.Write(ctx, crashID, int64(off), data[off:off+1<<16], time.Now()); err != nil {
			panic(err)
		}
		fmt.Fprintln(w, off+1<<16)
		w.Flush()
		time.Sleep(100 * time.Microsecond)
	}
	select {}
}
