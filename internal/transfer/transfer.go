// Package transfer moves attachments (docs/client.md section 7): it
// encrypts a file once into the profile's blobs directory (Prepare),
// uploads that blob to a relay over a connection, resuming from what the
// relay has (Upload), and downloads a blob, resuming from what it has,
// then checks and decrypts it to a file that appears only once it is
// whole and verified (Download).
//
// It is not where transfers are scheduled: the outbox uploads before it
// sends the message that announces a blob, and the inbox downloads what
// arrives. It keeps no state of its own beyond files: the caller records
// the transfer (localstore.Transfer).
package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/session"
	"github.com/ferry-im/ferry/wire"
)

// Directories in the profile.
const (
	// BlobsDir holds encrypted blobs: whole ones waiting to be uploaded,
	// and partial downloads (.part).
	BlobsDir = "blobs"
	// FilesDir is where received attachments are saved.
	FilesDir = "files"
)

// Errors callers branch on.
var (
	// ErrCorrupt means a downloaded blob failed its checks: it was
	// damaged or truncated on the way, or at the relay. Nothing was
	// saved; the partial download is discarded so a retry starts anew.
	ErrCorrupt = errors.New("the attachment arrived damaged")
	// ErrGone means the relay no longer has the blob (it expired, or
	// the sender's upload never finished).
	ErrGone = errors.New("the attachment is no longer on the relay")
	// ErrNotYet means the sender's upload is not finished: try later.
	ErrNotYet = errors.New("the attachment is still being uploaded by its sender")
	// ErrExpired means the sender's upload did not finish within the 48
	// hours a receiver waits for it.
	ErrExpired = errors.New("the sender's upload of the attachment did not finish within 48 hours; ask them to send it again")
)

// Prepared is an attachment ready to send: its transfer record (outgoing,
// pending, without targets), the pointer for the message, and the
// SHA-256 and size of the plaintext.
type Prepared struct {
	Transfer *localstore.Transfer
	Pointer  session.AttachmentPointer
	SHA256   [32]byte
	Size     int64
}

// Prepare encrypts src (the file at path, opened by the caller) into the
// profile's blobs directory under home, with a fresh attachment key and
// blob write key read from rand. The blob is written to a temporary file,
// synced and renamed, so a crash leaves no half blob under its name.
func Prepare(home string, rand io.Reader, src io.Reader, path string) (*Prepared, error) {
	var key [32]byte
	if _, err := io.ReadFull(rand, key[:]); err != nil {
		return nil, err
	}
	blob := wire.BlobID(key)
	rel := filepath.Join(BlobsDir, hex.EncodeToString(blob[:]))
	dst := filepath.Join(home, rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return nil, fmt.Errorf("prepare attachment: %w", err)
	}
	tmp, err := os.OpenFile(dst+".tmp", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("prepare attachment: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	w, err := session.NewAttachmentWriter(rand, tmp)
	if err != nil {
		return nil, err
	}
	plain := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, plain), src)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encrypt attachment: %w", err)
	}
	ptr, err := w.Pointer()
	if err != nil {
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("prepare attachment: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return nil, fmt.Errorf("prepare attachment: %w", err)
	}
	pb, _ := ptr.MarshalBinary()
	tr := &localstore.Transfer{Outgoing: true, State: localstore.TransferPending, Size: ptr.CiphertextSize(),
		Key: key, Blob: blob, Pointer: pb, Source: rel, Path: path}
	return &Prepared{Transfer: tr, Pointer: ptr, SHA256: [32]byte(plain.Sum(nil)), Size: n}, nil
}

// Upload uploads tr's blob to target tg over cn, from where the relay
// is (so bytes it has are never sent again), and returns once the relay
// has the whole blob and its digest matches. progress, if not nil, gets
// the bytes the relay has. A relay whose digest does not match gets the
// blob again, once, from its start.
func Upload(ctx context.Context, home string, cn *relayclient.Conn, tr *localstore.Transfer, tg localstore.Target, progress func(done int64)) error {
	f, err := os.Open(filepath.Join(home, tr.Source))
	if err != nil {
		return fmt.Errorf("open the encrypted attachment: %w", err)
	}
	defer f.Close()
	var ptr session.AttachmentPointer
	if err := ptr.UnmarshalBinary(tr.Pointer); err != nil {
		return fmt.Errorf("attachment pointer: %w", err)
	}
	for attempt := range 2 {
		st, err := cn.BlobCreate(ctx, tr.Key, tg.Mailbox, tg.Token, tr.Size, attempt > 0)
		if err != nil {
			return err
		}
		if st, err = cn.Upload(ctx, tr.Key, f, tr.Size, st, progress); err != nil {
			return err
		}
		if st.Digest == ptr.Digest {
			return nil
		}
	}
	return fmt.Errorf("%w: the relay keeps a damaged copy of the attachment", relayclient.ErrUnreachable)
}

// Download fetches the blob of tr (incoming) over cn into the profile's
// blobs directory, resuming from tr.Done, then checks it (digest, every
// chunk, the plaintext's SHA-256 want) and decrypts it to dst, which
// appears only once whole and checked. checkpoint, if not nil, is called
// now and then with the bytes held contiguously from the start, for the
// caller to record in tr.Done. A damaged blob is ErrCorrupt (the partial
// download is removed); a blob the relay lacks is ErrGone.
func Download(ctx context.Context, home string, cn *relayclient.Conn, tr *localstore.Transfer, want [32]byte, dst string, checkpoint func(done int64)) error {
	var ptr session.AttachmentPointer
	if err := ptr.UnmarshalBinary(tr.Pointer); err != nil {
		return fmt.Errorf("attachment pointer: %w", err)
	}
	part := filepath.Join(home, BlobsDir, hex.EncodeToString(tr.Blob[:])+".part")
	if err := os.MkdirAll(filepath.Dir(part), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(part, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("save attachment: %w", err)
	}
	defer f.Close()
	from := tr.Done
	if st, err := f.Stat(); err != nil || st.Size() < from {
		from = 0
	}
	last := from
	err = cn.Download(ctx, tr.Blob, f, from, tr.Size, func(done int64) {
		last = done
		if checkpoint != nil && (done-from >= 4<<20 || done == tr.Size) {
			from = done
			checkpoint(done)
		}
	})
	if err != nil && checkpoint != nil && last > from && f.Sync() == nil {
		// Keep what arrived: the next attempt resumes from there.
		checkpoint(last)
	}
	var re *relayclient.RefusedError
	switch {
	case errors.As(err, &re) && re.Code == wire.CodeNotFound:
		return ErrGone
	case errors.As(err, &re) && re.Code == wire.CodeUnavailable:
		return ErrNotYet
	}
	if err != nil {
		return err
	}
	if err := decrypt(f, ptr, want, dst); err != nil {
		if errors.Is(err, ErrCorrupt) {
			f.Close()
			os.Remove(part)
			if checkpoint != nil {
				checkpoint(0)
			}
		}
		return err
	}
	f.Close()
	os.Remove(part)
	return nil
}

// decrypt checks the blob in f against ptr and writes its plaintext to
// dst through a temporary file in dst's directory, renamed only once every
// check passed.
func decrypt(f *os.File, ptr session.AttachmentPointer, want [32]byte, dst string) error {
	r, err := session.NewAttachmentReader(io.NewSectionReader(f, 0, ptr.CiphertextSize()), ptr)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("save attachment: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*.part")
	if err != nil {
		return fmt.Errorf("save attachment: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), r); err != nil {
		if errors.Is(err, session.ErrAttachmentCorrupt) || errors.Is(err, session.ErrAttachmentTruncated) {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		return fmt.Errorf("save attachment: %w", err)
	}
	if [32]byte(h.Sum(nil)) != want {
		return fmt.Errorf("%w: its content does not match what the sender sent", ErrCorrupt)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("save attachment: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save attachment: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("save attachment: %w", err)
	}
	return nil
}

// FreeName returns a path in dir for a file called name that does not
// exist yet: name itself, or "stem (2).ext", "stem (3).ext"... An empty
// or hidden name becomes "attachment" or gets an underscore first.
func FreeName(dir, name string) string {
	if name == "" {
		name = "attachment"
	}
	if strings.HasPrefix(name, ".") {
		name = "_" + name
	}
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	p := filepath.Join(dir, name)
	for i := 2; ; i++ {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			return p
		}
		p = filepath.Join(dir, fmt.Sprintf("%s (%d)%s", stem, i, ext))
	}
}
