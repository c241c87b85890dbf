package relayclient_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"

	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/relay/blobtest"
	"github.com/ferry-im/ferry/wire"
)

// memFile is an io.WriterAt in memory.
type memFile struct {
	mu sync.Mutex
	b  []byte
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

// TestUploadResumeDownload uploads 3 MiB, loses the connection part way,
// resumes on a new connection from what the relay has (no byte sent
// twice, by the relay's count), then downloads the blob whole and in a
// range.
func TestUploadResumeDownload(t *testing.T) {
	tok := [32]byte{7}
	r, _, mb, h := owner(t, tok)
	ctx := context.Background()
	data := blobtest.Data(3<<20, 3)
	key := sha256.Sum256([]byte("key"))

	up, _ := dial(t, h, r.Link)
	st, err := up.BlobCreate(ctx, key, mb, tok, int64(len(data)), false)
	if err != nil || st.Stored != 0 {
		t.Fatalf("BlobCreate: %+v, %v", st, err)
	}
	_, err = up.Upload(ctx, key, bytes.NewReader(data), int64(len(data)), st, func(stored int64) {
		if stored >= 1<<20 {
			up.Close() // the connection drops
		}
	})
	if !errors.Is(err, relayclient.ErrUnreachable) {
		t.Fatalf("Upload over a closed connection: got %v, want ErrUnreachable", err)
	}
	up2, _ := dial(t, h, r.Link)
	st, err = up2.BlobCreate(ctx, key, mb, tok, int64(len(data)), false)
	if err != nil || st.Stored < 1<<20 || st.Complete {
		t.Fatalf("state after the drop: %+v, %v", st, err)
	}
	st, err = up2.Upload(ctx, key, bytes.NewReader(data), int64(len(data)), st, nil)
	if err != nil || !st.Complete || st.Digest != sha256.Sum256(data) {
		t.Fatalf("resumed upload: %+v, %v", st, err)
	}
	if dup := metric(t, r, "ferry_relay_blob_put_bytes_total", "duplicate"); dup != 0 {
		t.Errorf("the relay received %v bytes twice", dup)
	}
	if got := metric(t, r, "ferry_relay_blob_put_bytes_total", "stored"); got != float64(len(data)) {
		t.Errorf("stored %v bytes, want %d", got, len(data))
	}

	down, _ := dial(t, h, r.Link)
	var f memFile
	if err := down.Download(ctx, wire.BlobID(key), &f, 0, int64(len(data)), nil); err != nil || !bytes.Equal(f.b, data) {
		t.Fatalf("Download: %v; equal %v", err, bytes.Equal(f.b, data))
	}
	var part memFile
	if err := down.Download(ctx, wire.BlobID(key), &part, 2<<20, int64(len(data)), nil); err != nil || !bytes.Equal(part.b[2<<20:], data[2<<20:]) {
		t.Fatalf("Download from 2 MiB: %v", err)
	}
	err = down.Download(ctx, wire.BlobID(sha256.Sum256([]byte("other"))), &part, 0, 10, nil)
	var re *relayclient.RefusedError
	if !errors.As(err, &re) || re.Code != wire.CodeNotFound {
		t.Fatalf("Download of an unknown blob: got %v, want NotFound", err)
	}
}

func TestFanout(t *testing.T) {
	tok := [32]byte{7}
	r, _, mb, h := owner(t, tok)
	c, _ := dial(t, h, r.Link)
	res, err := c.Fanout(context.Background(), wire.Fanout{ID: [16]byte{1}, Envelope: []byte("x"), Recipients: []wire.Recipient{
		{Mailbox: mb, Token: tok}, {Mailbox: mb, Token: [32]byte{8}},
	}})
	if err != nil || len(res.Failures) != 1 || res.Failures[0] != (wire.FanoutFailure{Index: 1, Code: wire.CodeDenied}) {
		t.Fatalf("Fanout: %+v, %v", res, err)
	}
}

func metric(t *testing.T, r interface{ Metric(string, string) float64 }, name, label string) float64 {
	t.Helper()
	return r.Metric(name, label)
}
