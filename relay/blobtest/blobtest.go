// Package blobtest is the conformance suite for relay.BlobStore: every
// backend runs it from its own tests, so the contracts written on
// relay.BlobStore hold for all of them.
//
// It is test support, not a backend; production code never imports it.
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
)

// Config says how to get blob stores for the suite.
type Config struct {
	// Open returns a new, empty store. The suite closes it.
	Open func(t *testing.T) relay.BlobStore
	// Reopen, if set, closes s and opens the same store again; the suite
	// then checks that what was written survives.
	Reopen func(t *testing.T, s relay.BlobStore) relay.BlobStore
}

var t0 = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

// Run runs every conformance test against the stores c opens.
func Run(t *testing.T, c Config) {
	tests := []struct {
		name string
		fn   func(t *testing.T, c Config)
	}{
		{"Create", testCreate},
		{"Quota", testQuota},
		{"WritePieces", testWritePieces},
		{"WriteOverlap", testWriteOverlap},
		{"Read", testRead},
		{"Reset", testReset},
		{"Expire", testExpire},
		{"InputsNotRetained", testInputsNotRetained},
		{"ConcurrentWriters", testConcurrentWriters},
		{"AfterClose", testAfterClose},
		{"Durable", testDurable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, c) })
	}
}

func open(t *testing.T, c Config) relay.BlobStore {
	t.Helper()
	s := c.Open(t)
	t.Cleanup(func() { s.Close() })
	return s
}

func blobID(n byte) [16]byte  { return [16]byte{0: 'b', 1: n} }
func mailbox(n byte) [16]byte { return [16]byte{0: 'm', 1: n} }

// Data returns n deterministic bytes for a blob.
func Data(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed ^ byte(i>>9)
	}
	return b
}

func create(t *testing.T, s relay.BlobStore, id, mb [16]byte, size int64) relay.BlobInfo {
	t.Helper()
	info, err := s.Create(context.Background(), id, mb, size, t0, relay.BlobQuota{})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return info
}

// WriteAll writes data to blob id in pieces of n bytes and returns the
// last info.
func WriteAll(t testing.TB, s relay.BlobStore, id [16]byte, data []byte, n int) relay.BlobInfo {
	t.Helper()
	return WriteFrom(t, s, id, data, 0, n)
}

// WriteFrom writes data[from:] at its offsets to blob id in pieces of n
// bytes and returns the last info.
func WriteFrom(t testing.TB, s relay.BlobStore, id [16]byte, data []byte, from, n int) relay.BlobInfo {
	t.Helper()
	var info relay.BlobInfo
	for off := from; off < len(data); off += n {
		var err error
		var dup int
		info, dup, err = s.Write(context.Background(), id, int64(off), data[off:min(off+n, len(data))], t0)
		if err != nil || dup != 0 {
			t.Fatalf("Write at %d: dup %d, %v", off, dup, err)
		}
	}
	return info
}

func testCreate(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	info := create(t, s, blobID(1), mailbox(1), 100)
	if info.ID != blobID(1) || info.Mailbox != mailbox(1) || info.Size != 100 || info.Stored != 0 || info.Complete || !info.Created.Equal(t0) {
		t.Fatalf("new blob: got %+v", info)
	}
	again, err := s.Create(ctx, blobID(1), mailbox(1), 100, t0.Add(time.Hour), relay.BlobQuota{})
	if err != nil || !again.Created.Equal(t0) {
		t.Fatalf("Create again: got %+v, %v; want the first blob", again, err)
	}
	if _, err := s.Create(ctx, blobID(1), mailbox(1), 101, t0, relay.BlobQuota{}); !errors.Is(err, relay.ErrBlobSize) {
		t.Fatalf("Create with another size: got %v, want ErrBlobSize", err)
	}
	if _, err := s.Info(ctx, blobID(9)); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("Info of a missing blob: got %v, want ErrNotFound", err)
	}
	// An empty blob is complete at once, with the digest of nothing.
	empty := create(t, s, blobID(2), mailbox(1), 0)
	if !empty.Complete || empty.Digest != sha256.Sum256(nil) {
		t.Fatalf("empty blob: got %+v, want complete with SHA-256 of nothing", empty)
	}
	u, err := s.Usage(ctx, mailbox(1))
	if err != nil || u != (relay.BlobUsage{Count: 2, Bytes: 100}) {
		t.Fatalf("Usage: got %+v, %v; want 2 blobs, 100 bytes", u, err)
	}
}

func testQuota(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	q := relay.BlobQuota{MaxCount: 2, MaxBytes: 1000}
	if _, err := s.Create(ctx, blobID(1), mailbox(1), 600, t0, q); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, blobID(2), mailbox(1), 401, t0, q); !errors.Is(err, relay.ErrQuota) {
		t.Fatalf("over the bytes: got %v, want ErrQuota", err)
	}
	if _, err := s.Create(ctx, blobID(2), mailbox(1), 400, t0, q); err != nil {
		t.Fatalf("up to the bytes: %v", err)
	}
	if _, err := s.Create(ctx, blobID(3), mailbox(1), 0, t0, q); !errors.Is(err, relay.ErrQuota) {
		t.Fatalf("over the count: got %v, want ErrQuota", err)
	}
	if _, err := s.Create(ctx, blobID(3), mailbox(2), 1000, t0, q); err != nil {
		t.Fatalf("another mailbox: %v", err)
	}
	// An existing blob is no new charge.
	if _, err := s.Create(ctx, blobID(1), mailbox(1), 600, t0, q); err != nil {
		t.Fatalf("existing blob over quota: %v", err)
	}
	if _, err := s.Info(ctx, blobID(9)); !errors.Is(err, relay.ErrNotFound) {
		t.Fatal("a refused blob was created")
	}
}

func testWritePieces(t *testing.T, c Config) {
	s := open(t, c)
	data := Data(300000, 1)
	create(t, s, blobID(1), mailbox(1), int64(len(data)))
	var last relay.BlobInfo
	for off := 0; off < len(data); off += 65552 {
		info, dup, err := s.Write(context.Background(), blobID(1), int64(off), data[off:min(off+65552, len(data))], t0.Add(time.Minute))
		if err != nil || dup != 0 {
			t.Fatalf("Write at %d: dup %d, %v", off, dup, err)
		}
		if want := int64(min(off+65552, len(data))); info.Stored != want {
			t.Fatalf("Stored %d, want %d", info.Stored, want)
		}
		last = info
	}
	if !last.Complete || last.Digest != sha256.Sum256(data) || !last.Touched.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after the last piece: got %+v, want complete with the data's digest", last)
	}
	info, err := s.Info(context.Background(), blobID(1))
	if err != nil || info != last {
		t.Fatalf("Info: got %+v, %v; want %+v", info, err, last)
	}
}

func testWriteOverlap(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	data := Data(1000, 2)
	create(t, s, blobID(1), mailbox(1), 1000)
	WriteAll(t, s, blobID(1), data[:400], 400)
	// A resumed writer repeats bytes the store has: they are not written
	// again, and the rest is.
	info, dup, err := s.Write(ctx, blobID(1), 300, data[300:600], t0)
	if err != nil || dup != 100 || info.Stored != 600 {
		t.Fatalf("overlapping Write: got stored %d, dup %d, %v; want 600, 100", info.Stored, dup, err)
	}
	if _, dup, err := s.Write(ctx, blobID(1), 0, data[:100], t0); err != nil || dup != 100 {
		t.Fatalf("repeated Write: dup %d, %v; want 100", dup, err)
	}
	if _, _, err := s.Write(ctx, blobID(1), 601, data[601:700], t0); !errors.Is(err, relay.ErrBlobGap) {
		t.Fatalf("Write beyond Stored: got %v, want ErrBlobGap", err)
	}
	if _, _, err := s.Write(ctx, blobID(1), 600, make([]byte, 401), t0); !errors.Is(err, relay.ErrBlobRange) {
		t.Fatalf("Write past Size: got %v, want ErrBlobRange", err)
	}
	if _, _, err := s.Write(ctx, blobID(9), 0, data[:1], t0); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("Write to a missing blob: got %v, want ErrNotFound", err)
	}
	info, _, err = s.Write(ctx, blobID(1), 600, data[600:], t0)
	if err != nil || !info.Complete || info.Digest != sha256.Sum256(data) {
		t.Fatalf("last piece: got %+v, %v", info, err)
	}
	// Writes to a complete blob change nothing.
	if info2, dup, err := s.Write(ctx, blobID(1), 990, make([]byte, 10), t0); err != nil || dup != 10 || info2.Digest != info.Digest {
		t.Fatalf("Write to a complete blob: got %+v, dup %d, %v", info2, dup, err)
	}
	got := make([]byte, 1000)
	if n, err := s.ReadAt(ctx, blobID(1), got, 0); n != 1000 || err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAt: %d, %v; bytes differ: %v", n, err, !bytes.Equal(got, data))
	}
}

func testRead(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	data := Data(200000, 3)
	create(t, s, blobID(1), mailbox(1), int64(len(data)))
	WriteAll(t, s, blobID(1), data[:100000], 65536)
	if _, err := s.ReadAt(ctx, blobID(1), make([]byte, 10), 0); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("ReadAt of an incomplete blob: got %v, want ErrNotFound", err)
	}
	if _, _, err := s.Write(ctx, blobID(1), 100000, data[100000:], t0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		off, n, want int
	}{
		{0, 10, 10}, {65536, 65552, 65552}, {199990, 100, 10}, {200000, 10, 0},
	} {
		p := make([]byte, tc.n)
		n, err := s.ReadAt(ctx, blobID(1), p, int64(tc.off))
		if err != nil || n != tc.want || !bytes.Equal(p[:n], data[tc.off:tc.off+n]) {
			t.Fatalf("ReadAt(%d, %d): got %d, %v; want %d bytes of the blob", tc.n, tc.off, n, err, tc.want)
		}
	}
	if _, err := s.ReadAt(ctx, blobID(1), make([]byte, 1), 200001); !errors.Is(err, relay.ErrBlobRange) {
		t.Fatalf("ReadAt past the end: got %v, want ErrBlobRange", err)
	}
	if _, err := s.ReadAt(ctx, blobID(9), make([]byte, 1), 0); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("ReadAt of a missing blob: got %v, want ErrNotFound", err)
	}
}

func testReset(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	data := Data(5000, 4)
	create(t, s, blobID(1), mailbox(1), 5000)
	WriteAll(t, s, blobID(1), bytes.Repeat([]byte{'x'}, 5000), 4096)
	info, err := s.Reset(ctx, blobID(1), t0)
	if err != nil || info.Stored != 0 || info.Complete || info.Digest != ([32]byte{}) {
		t.Fatalf("Reset: got %+v, %v", info, err)
	}
	info = WriteAll(t, s, blobID(1), data, 4096)
	if !info.Complete || info.Digest != sha256.Sum256(data) {
		t.Fatalf("written again after Reset: got %+v", info)
	}
	if _, err := s.Reset(ctx, blobID(9), t0); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("Reset of a missing blob: got %v, want ErrNotFound", err)
	}
}

func testExpire(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	day := 24 * time.Hour
	mk := func(n byte, at time.Time, complete bool) {
		if _, err := s.Create(ctx, blobID(n), mailbox(1), 10, at, relay.BlobQuota{}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Write(ctx, blobID(n), 0, make([]byte, 5), at); err != nil {
			t.Fatal(err)
		}
		if complete {
			if _, _, err := s.Write(ctx, blobID(n), 5, make([]byte, 5), at); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk(1, t0, true)             // old and complete: expires by age
	mk(2, t0.Add(20*day), true) // young and complete: stays
	mk(3, t0.Add(20*day), false)
	mk(4, t0.Add(27*day), false) // recently written: stays
	n, err := s.Expire(ctx, t0.Add(10*day), t0.Add(25*day))
	if err != nil || n != 2 {
		t.Fatalf("Expire: got %d, %v; want 2", n, err)
	}
	for id, want := range map[byte]bool{1: false, 2: true, 3: false, 4: true} {
		_, err := s.Info(ctx, blobID(id))
		if have := err == nil; have != want {
			t.Errorf("blob %d: present %v, want %v (%v)", id, have, want, err)
		}
	}
	if u, _ := s.Usage(ctx, mailbox(1)); u != (relay.BlobUsage{Count: 2, Bytes: 20}) {
		t.Fatalf("Usage after Expire: got %+v, want 2 blobs of 10", u)
	}
}

func testInputsNotRetained(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	data := Data(100, 5)
	buf := append([]byte(nil), data...)
	create(t, s, blobID(1), mailbox(1), 100)
	if _, _, err := s.Write(ctx, blobID(1), 0, buf, t0); err != nil {
		t.Fatal(err)
	}
	clear(buf)
	got := make([]byte, 100)
	if _, err := s.ReadAt(ctx, blobID(1), got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAt after the caller reused its buffer: %v, bytes differ: %v", err, !bytes.Equal(got, data))
	}
}

// testConcurrentWriters has two writers (a resumed upload and the one it
// replaced) write the same blob at once: writes are serialised and the
// blob comes out whole.
func testConcurrentWriters(t *testing.T, c Config) {
	s := open(t, c)
	data := Data(1<<20, 6)
	create(t, s, blobID(1), mailbox(1), int64(len(data)))
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			piece := 4096 * (w + 1)
			for off := 0; off < len(data); {
				info, _, err := s.Write(context.Background(), blobID(1), int64(off), data[off:min(off+piece, len(data))], t0)
				switch {
				case errors.Is(err, relay.ErrBlobGap):
					off = int(info.Stored)
				case err != nil:
					t.Error(err)
					return
				default:
					off = int(info.Stored)
				}
			}
		}()
	}
	wg.Wait()
	info, err := s.Info(context.Background(), blobID(1))
	if err != nil || !info.Complete || info.Digest != sha256.Sum256(data) {
		t.Fatalf("after concurrent writers: got %+v, %v", info, err)
	}
}

func testAfterClose(t *testing.T, c Config) {
	s := c.Open(t)
	ctx := context.Background()
	create(t, s, blobID(1), mailbox(1), 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Info(ctx, blobID(1)); !errors.Is(err, relay.ErrClosed) {
		t.Errorf("Info after Close: got %v, want ErrClosed", err)
	}
	if _, _, err := s.Write(ctx, blobID(1), 0, []byte{1}, t0); !errors.Is(err, relay.ErrClosed) {
		t.Errorf("Write after Close: got %v, want ErrClosed", err)
	}
	if _, err := s.Create(ctx, blobID(2), mailbox(1), 1, t0, relay.BlobQuota{}); !errors.Is(err, relay.ErrClosed) {
		t.Errorf("Create after Close: got %v, want ErrClosed", err)
	}
}

func testDurable(t *testing.T, c Config) {
	if c.Reopen == nil {
		t.Skip("the store is not durable (in memory)")
	}
	s := c.Open(t)
	ctx := context.Background()
	data := Data(150000, 7)
	create(t, s, blobID(1), mailbox(1), int64(len(data)))
	WriteAll(t, s, blobID(1), data, 65552)
	create(t, s, blobID(2), mailbox(2), int64(len(data)))
	WriteAll(t, s, blobID(2), data[:70000], 65552)
	s = c.Reopen(t, s)
	defer s.Close()
	a, err := s.Info(ctx, blobID(1))
	if err != nil || !a.Complete || a.Digest != sha256.Sum256(data) || a.Mailbox != mailbox(1) || !a.Created.Equal(t0) {
		t.Fatalf("complete blob after reopen: got %+v, %v", a, err)
	}
	b, err := s.Info(ctx, blobID(2))
	if err != nil || b.Complete || b.Stored != 70000 {
		t.Fatalf("partial blob after reopen: got %+v, %v; want 70000 stored", b, err)
	}
	WriteFrom(t, s, blobID(2), data, 70000, 65552)
	b, _ = s.Info(ctx, blobID(2))
	if !b.Complete || b.Digest != sha256.Sum256(data) {
		t.Fatalf("resumed after reopen: got %+v, want the whole data's digest", b)
	}
	if u, _ := s.Usage(ctx, mailbox(2)); u != (relay.BlobUsage{Count: 1, Bytes: int64(len(data))}) {
		t.Fatalf("Usage after reopen: got %+v", u)
	}
}
