package ferry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-im/ferry/internal/clienttest"
	"github.com/ferry-im/ferry/internal/inbox"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/blobtest"
)

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSendFile: a file goes from bob to alice, is downloaded by her Sync
// by itself, byte-identical, and both sides describe it; an attachment
// over the auto-download size waits for Save.
func TestSendFile(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.pair(t)
	ctx := context.Background()
	data := blobtest.Data(1<<20+123, 1)
	var last Progress
	msg, err := bob.SendFile(ctx, conv(t, bob, "alice"), writeFile(t, "report.bin", data), SendFileOptions{Progress: func(p Progress) { last = p }})
	if err != nil {
		t.Fatal(err)
	}
	a := msg.Body.(*Attachment)
	if msg.Kind != KindAttachment || a.Name != "report.bin" || a.Size != int64(len(data)) || a.SHA256 != sha256.Sum256(data) || msg.State != StateSent {
		t.Fatalf("sent %+v %+v", msg, a)
	}
	if last.Done != last.Total || last.Total == 0 {
		t.Errorf("last progress %+v, want done", last)
	}
	syncNow(t, alice)
	got := unread(t, alice)
	if len(got) != 1 || got[0].Kind != KindAttachment {
		t.Fatalf("alice got %s", show(got))
	}
	ga := got[0].Body.(*Attachment)
	if ga.Transfer != TransferDone || ga.Name != "report.bin" || ga.Size != int64(len(data)) {
		t.Fatalf("alice's attachment %+v", ga)
	}
	if b, err := os.ReadFile(ga.Path); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("the saved file %s: %v, equal %v", ga.Path, err, bytes.Equal(b, data))
	}
	if !strings.HasPrefix(ga.Path, filepath.Join(alice.a.Home, "files")) {
		t.Errorf("saved at %s, want under the profile's files", ga.Path)
	}

	// Over the auto-download size: it waits, then Save fetches it.
	if err := alice.MarkShown(ctx, got); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAutoDownload(ctx, 1000); err != nil {
		t.Fatal(err)
	}
	big := blobtest.Data(5000, 2)
	if _, err := bob.SendFile(ctx, conv(t, bob, "alice"), writeFile(t, "big.bin", big), SendFileOptions{}); err != nil {
		t.Fatal(err)
	}
	syncNow(t, alice)
	got = unread(t, alice)
	if len(got) != 1 || got[0].Body.(*Attachment).Transfer != TransferPending || got[0].Body.(*Attachment).Path != "" {
		t.Fatalf("big attachment: %s %+v", show(got), got[0].Body)
	}
	dir := t.TempDir()
	p, err := alice.Save(ctx, got[0].ID, dir, nil)
	if err != nil || p != filepath.Join(dir, "big.bin") {
		t.Fatalf("Save: %s, %v", p, err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, big) {
		t.Fatal("saved file differs")
	}
	// Saving again copies the saved file.
	p2, err := alice.Save(ctx, got[0].ID, filepath.Join(dir, "copy.bin"), nil)
	if b, _ := os.ReadFile(p2); err != nil || !bytes.Equal(b, big) {
		t.Fatalf("Save again: %v", err)
	}
}

// TestSendFileBadInput: each bad file is one sentence and leaves nothing
// queued.
func TestSendFileBadInput(t *testing.T) {
	w := newWorld(t)
	_, bob := w.pair(t)
	ctx := context.Background()
	unreadable := writeFile(t, "secret.txt", []byte("x"))
	os.Chmod(unreadable, 0)
	for _, tc := range []struct {
		path string
		opts SendFileOptions
		want string
	}{
		{filepath.Join(t.TempDir(), "missing.jpg"), SendFileOptions{}, "there is no file"},
		{t.TempDir(), SendFileOptions{}, "is a directory"},
		{writeFile(t, "notes.txt", []byte("hello")), SendFileOptions{Voice: true}, "is not an Ogg Opus voice note"},
		{writeFile(t, "a.txt", []byte("x")), SendFileOptions{Name: "../etc/passwd"}, "cannot be sent"},
	} {
		_, err := bob.SendFile(ctx, conv(t, bob, "alice"), tc.path, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: got %v, want one sentence containing %q", filepath.Base(tc.path), err, tc.want)
		}
	}
	if os.Geteuid() != 0 {
		if _, err := bob.SendFile(ctx, conv(t, bob, "alice"), unreadable, SendFileOptions{}); err == nil || !strings.Contains(err.Error(), "cannot read") {
			t.Errorf("unreadable: %v", err)
		}
	}
	if n, _ := bob.Queued(ctx); n != 0 {
		t.Errorf("%d envelopes queued after bad input", n)
	}
}

// TestSendFileQuota: a full quota at the recipient's relay is a sentence,
// and the message stays queued (the quota may free up).
func TestDownloadCorrupt(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.pair(t)
	ctx := context.Background()
	data := blobtest.Data(200000, 3)
	msg, err := bob.SendFile(ctx, conv(t, bob, "alice"), writeFile(t, "photo.raw", data), SendFileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The relay's copy is damaged after the upload: flip a byte of the
	// stored blob through a reset and a damaged re-upload.
	tr := mustTransfer(t, bob, msg.ID)
	if _, err := os.Stat(filepath.Join(bob.a.Home, tr.Source)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the uploaded blob is still in the sender's profile: %v", err)
	}
	blobs := w.relay.Blobs
	id := tr.Blob
	damaged := make([]byte, tr.Size)
	if _, err := blobs.ReadAt(ctx, id, damaged, 0); err != nil {
		t.Fatal(err)
	}
	damaged[1000] ^= 1
	if _, err := blobs.Reset(ctx, id, w.Clock.Now()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := blobs.Write(ctx, id, 0, damaged, w.Clock.Now()); err != nil {
		t.Fatal(err)
	}
	syncNow(t, alice)
	got := unread(t, alice)
	a := got[0].Body.(*Attachment)
	if a.Transfer != TransferFailed || !strings.Contains(a.Err, "damaged") || a.Path != "" {
		t.Fatalf("damaged download: %+v", a)
	}
	files, _ := os.ReadDir(filepath.Join(alice.a.Home, "files"))
	if len(files) != 0 {
		t.Fatalf("files left by a damaged download: %v", files)
	}
	dst := filepath.Join(t.TempDir(), "photo.raw")
	if _, err := alice.Save(ctx, got[0].ID, dst, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Save of a damaged blob: %v, want ErrCorrupt", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Save left a file where the user looks")
	}
}

func mustTransfer(t *testing.T, c *Client, id [16]byte) *localstore.Transfer {
	t.Helper()
	var tr *localstore.Transfer
	if err := c.a.Store.Update(context.Background(), func(tx *localstore.Tx) (err error) { tr, err = tx.Transfer(id); return }); err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestDownloadBeforeUploadEnds: the message announcing an attachment goes
// before its upload ends (so texts after it are not held up); the
// recipient's download waits, pending, until the sender's next command
// finishes the upload, and then completes.
func TestDownloadBeforeUploadEnds(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.pair(t)
	data := blobtest.Data(2<<20, 5)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := bob.SendFile(ctx, conv(t, bob, "alice"), writeFile(t, "clip.mp4", data), SendFileOptions{Progress: func(p Progress) {
		if p.Done > 0 {
			cancel() // bob's ferry send is interrupted mid-upload
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted SendFile: %v", err)
	}
	send(t, bob, "alice", "a text after it")
	syncNow(t, alice)
	got := unread(t, alice)
	if len(got) != 2 || got[0].Body.(*Attachment).Transfer != TransferPending || got[1].Text() != "a text after it" {
		t.Fatalf("alice got %s", show(got))
	}
	alice.MarkShown(context.Background(), got)
	syncNow(t, bob) // resumes the upload
	syncNow(t, alice)
	ms, _ := alice.Messages(context.Background(), Query{})
	for _, m := range ms {
		if a, ok := m.Body.(*Attachment); ok {
			if b, err := os.ReadFile(a.Path); a.Transfer != TransferDone || err != nil || !bytes.Equal(b, data) {
				t.Fatalf("after the upload ended: %+v, %v", a, err)
			}
			return
		}
	}
	t.Fatal("no attachment")
}

// TestWaitingSyncDownloadsOnceUploaded: a recipient whose Sync waits (the
// chat, the app) and tried a download before the sender's upload ended
// gets it once the upload ends, with no other message to wake it.
func TestWaitingSyncDownloadsOnceUploaded(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.pair(t)
	alice.with(inbox.Options{OutboxRetry: 100 * time.Millisecond})
	data := blobtest.Data(2<<20, 6)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := bob.SendFile(ctx, conv(t, bob, "alice"), writeFile(t, "clip.mp4", data), SendFileOptions{Progress: func(p Progress) {
		if p.Done > 0 {
			cancel() // bob's ferry send is interrupted mid-upload
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted SendFile: %v", err)
	}
	send(t, bob, "alice", "a text after it")
	sctx, stop := context.WithCancel(context.Background())
	synced := make(chan error, 1)
	go func() { synced <- alice.Sync(sctx, SyncOptions{Wait: time.Hour}) }()
	defer func() {
		stop()
		if err := <-synced; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("alice's waiting Sync: %v", err)
		}
	}()
	attachment := func() *Attachment {
		ms, err := alice.Messages(context.Background(), Query{})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if a, ok := m.Body.(*Attachment); ok {
				return a
			}
		}
		return nil
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 30 s: %+v", what, attachment())
			}
		}
	}
	waitFor("pending attachment", func() bool { a := attachment(); return a != nil && a.Transfer == TransferPending })
	syncNow(t, bob) // resumes the upload to its end
	waitFor("download by the waiting Sync", func() bool { a := attachment(); return a != nil && a.Transfer == TransferDone })
	if b, err := os.ReadFile(attachment().Path); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("downloaded file: %d bytes, %v; want the %d sent", len(b), err, len(data))
	}
}

// TestSendFileQuota: a recipient whose attachment storage at the relay
// is full: SendFile says so in a sentence and keeps the upload queued
// (the quota may free up); the message itself went ahead.
func TestSendFileQuota(t *testing.T) {
	w := newWorld(t)
	small := w.StartRelay(clienttest.RelayConfig{Limits: relay.Limits{BlobQuotaBytes: 100 << 10, AddrRate: -1, HandshakeRate: -1}})
	alice := w.client(t, "alice", small)
	bob := w.client(t, "bob", nil)
	introduce(t, alice, bob)
	_, err := bob.SendFile(context.Background(), conv(t, bob, "alice"), writeFile(t, "big.bin", blobtest.Data(200<<10, 1)), SendFileOptions{})
	if !errors.Is(err, ErrQueued) || !strings.Contains(err.Error(), "attachment storage on their relay is full") {
		t.Fatalf("over quota: %v", err)
	}
	syncNow(t, alice)
	got := unread(t, alice)
	if last := got[len(got)-1]; last.Kind != KindAttachment || last.Body.(*Attachment).Transfer != TransferPending {
		t.Fatalf("alice: %s", show(got))
	}
}
