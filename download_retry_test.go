package ferry

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-im/ferry/internal/clienttest"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/blobtest"
	"github.com/ferry-im/ferry/relay/memstore"
)

// flakyBlobs is a relay's blob store whose reads at or past an offset
// fail while down is set (the relay answers Unavailable), counting the
// bytes it serves.
type flakyBlobs struct {
	relay.BlobStore
	down   atomic.Bool
	from   int64        // reads at or past this offset fail while down
	failed atomic.Int32 // reads refused
	served atomic.Int64 // bytes read
	// first is the offset of the first read once watch is set (-1 before).
	watch atomic.Bool
	first atomic.Int64
	// hook, if set, is called (once) instead of the first read at or past
	// from, and its error returned.
	hook     func() error
	hookOnce sync.Once
}

func (f *flakyBlobs) ReadAt(ctx context.Context, id [16]byte, p []byte, off int64) (int, error) {
	if f.down.Load() && off >= f.from {
		f.failed.Add(1)
		return 0, errors.New("attachment storage is down")
	}
	if f.hook != nil && off >= f.from {
		var err error
		f.hookOnce.Do(func() { err = f.hook() })
		if err != nil {
			return 0, err
		}
	}
	if f.watch.Load() {
		f.first.CompareAndSwap(-1, off)
	}
	n, err := f.BlobStore.ReadAt(ctx, id, p, off)
	f.served.Add(int64(n))
	return n, err
}

// TestDownloadRetries: the relay's attachment storage fails in the
// middle of alice's first download; her waiting Sync tries again by
// itself (nothing else arrives to prompt it) and resumes where the first
// attempt stopped, so the relay serves the blob's bytes once.
func TestDownloadRetries(t *testing.T) {
	blobs := &flakyBlobs{BlobStore: memstore.NewBlobs(), from: 1 << 20}
	blobs.down.Store(true)
	w := &world{Harness: clienttest.New(t)}
	w.relay = w.StartRelay(clienttest.RelayConfig{Blobs: blobs})
	alice, bob := w.pair(t)
	ctx := context.Background()
	syncInBackground(t, alice)
	data := blobtest.Data(3<<20+77, 3)
	if _, err := bob.SendFile(ctx, conv(t, bob, "alice"), writeFile(t, "film.bin", data), SendFileOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "alice's first download to fail", func() bool { return blobs.failed.Load() > 0 })
	blobs.first.Store(-1)
	blobs.watch.Store(true)
	blobs.down.Store(false)
	waitForDownload(t, alice, "bob", data, "the download to finish by itself")
	// Tried again where the first attempt got to, not at 0.
	if first := blobs.first.Load(); first <= 0 {
		t.Errorf("once the storage was back, the download started again at %d: it restarted instead of resuming", first)
	}
}

// syncInBackground keeps c syncing, as a running app does, until the test
// ends.
func syncInBackground(t *testing.T, c *Client) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := c.Sync(ctx, SyncOptions{Wait: 10 * time.Minute}); err != nil && ctx.Err() == nil {
			t.Errorf("Sync: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// waitForDownload waits up to two minutes for the attachment from the
// contact named from to be downloaded in c's conversation with them, and
// checks that the saved file holds data.
func waitForDownload(t *testing.T, c *Client, from string, data []byte, what string) {
	t.Helper()
	var a *Attachment
	waitFor(t, 2*time.Minute, what, func() bool {
		for _, m := range history(t, c, from) {
			if x, ok := m.Body.(*Attachment); ok && x.Transfer == TransferDone {
				a = x
				return true
			}
		}
		return false
	})
	if b, err := os.ReadFile(a.Path); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("the saved file: %v, equal %v", err, bytes.Equal(b, data))
	}
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDownloadResumesAfterRelayDown: the relay goes down in the middle
// of alice's first download (after its first 2 MiB) and comes back; her
// waiting Sync reconnects and the download goes on from where the cut
// left it: the relay serves the blob's bytes once.
func TestDownloadResumesAfterRelayDown(t *testing.T) {
	cut, back := make(chan struct{}), make(chan struct{})
	blobs := &flakyBlobs{BlobStore: memstore.NewBlobs(), from: 2 << 20, hook: func() error {
		close(cut)
		<-back
		return errors.New("the relay went down")
	}}
	w := &world{Harness: clienttest.New(t)}
	w.relay = w.StartRelay(clienttest.RelayConfig{Blobs: blobs})
	alice, bob := w.pair(t)
	data := blobtest.Data(5<<20+77, 4)
	// The file is on the relay before alice connects.
	if _, err := bob.SendFile(context.Background(), conv(t, bob, "alice"), writeFile(t, "film.bin", data), SendFileOptions{}); err != nil {
		t.Fatal(err)
	}
	syncInBackground(t, alice)
	select {
	case <-cut:
	case <-time.After(time.Minute):
		t.Fatal("alice's download never got past its first 2 MiB")
	}
	w.relay.Down()
	close(back)
	blobs.first.Store(-1)
	blobs.watch.Store(true)
	w.relay.Up()
	waitForDownload(t, alice, "bob", data, "the download to finish after the relay came back")
	// The second attempt starts where the first got to (what had
	// arrived in order when the relay went down; pieces then on their
	// way are read again), not at 0: the first 4 MiB checkpoint was
	// never reached.
	if first := blobs.first.Load(); first <= 0 {
		t.Errorf("after the relay came back, the download started again at %d: it restarted instead of resuming", first)
	} else {
		t.Logf("resumed at %d; the relay served %d bytes in all of a blob of %d", first, blobs.served.Load(), int64(len(data))*65552/65536)
	}
}

// stuckBlobs is a relay's blob store that takes no piece: uploads are
// created and never finish.
type stuckBlobs struct{ relay.BlobStore }

func (stuckBlobs) Write(context.Context, [16]byte, int64, []byte, time.Time) (relay.BlobInfo, int, error) {
	return relay.BlobInfo{}, 0, errors.New("attachment storage takes nothing")
}

// TestDownloadNeverUploaded: an attachment whose upload never finishes
// stays pending for 48 hours after its message arrived, then fails with
// a sentence that says what to do.
func TestDownloadNeverUploaded(t *testing.T) {
	w := &world{Harness: clienttest.New(t)}
	w.relay = w.StartRelay(clienttest.RelayConfig{Blobs: stuckBlobs{memstore.NewBlobs()}})
	alice, bob := w.pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	// The message goes at once; the upload does not get anywhere.
	bob.SendFile(ctx, conv(t, bob, "alice"), writeFile(t, "never.bin", blobtest.Data(1000, 5)), SendFileOptions{})
	attachment := func() *Attachment {
		syncNow(t, alice)
		for _, m := range history(t, alice, "bob") {
			if a, ok := m.Body.(*Attachment); ok {
				return a
			}
		}
		t.Fatal("alice has no attachment from bob")
		return nil
	}
	if a := attachment(); a.Transfer != TransferPending {
		t.Fatalf("just arrived: %v %q, want pending", a.Transfer, a.Err)
	}
	w.Clock.Advance(47 * time.Hour)
	if a := attachment(); a.Transfer != TransferPending {
		t.Fatalf("after 47 hours: %v %q, want pending", a.Transfer, a.Err)
	}
	w.Clock.Advance(2 * time.Hour)
	a := attachment()
	if a.Transfer != TransferFailed || !strings.Contains(a.Err, "did not finish within 48 hours; ask them to send it again") {
		t.Fatalf("after 49 hours: %v %q, want failed, asking for it again", a.Transfer, a.Err)
	}
}
