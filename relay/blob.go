package relay

import (
	"context"
	"errors"
	"time"
)

// Errors a BlobStore returns and callers branch on (with ErrNotFound,
// ErrQuota and ErrClosed).
var (
	// ErrBlobSize means Create found the blob with another size.
	ErrBlobSize = errors.New("relay: blob exists with another size")
	// ErrBlobGap means a Write started beyond the bytes stored.
	ErrBlobGap = errors.New("relay: blob write beyond the bytes stored")
	// ErrBlobRange means a Write went past the blob's size, or a read
	// started past its end.
	ErrBlobRange = errors.New("relay: outside the blob")
)

// BlobInfo describes one blob.
type BlobInfo struct {
	ID [16]byte
	// Mailbox is the mailbox whose quota the blob counts against.
	Mailbox [16]byte
	// Size is the blob's length, fixed at Create; Stored is how many of
	// its bytes, from the start, the store holds.
	Size, Stored int64
	// Complete is set once Stored reached Size and the bytes are durable;
	// Digest is then the SHA-256 of the blob.
	Complete bool
	Digest   [32]byte
	// Created is when the blob was created; Touched when it was last
	// written (both as the caller's clock said, to the second at least).
	Created, Touched time.Time
}

// BlobQuota bounds the blobs one mailbox may have, complete or not: their
// number and the sum of their sizes. A zero field means no limit.
type BlobQuota struct {
	MaxCount int
	MaxBytes int64
}

// BlobUsage is what a mailbox's blobs take.
type BlobUsage struct {
	Count int
	Bytes int64 // the sum of their sizes
}

// BlobStore holds blobs: opaque byte strings of a size fixed when they are
// created, written once from the start (in any number of pieces, resumable
// after a crash of either side) and read at any offset once complete. It
// never interprets the bytes.
//
// Contracts every implementation keeps (relay/blobtest checks them):
//   - All methods are safe for concurrent use; writes to one blob are
//     serialised.
//   - A Write that returned stays written, across a crash of the process
//     (kill -9); a blob is Complete only once its bytes are durable
//     (fsync'd for a disk store), so a Complete blob survives a crash of
//     the machine too. After a crash Stored may be lower than what the
//     writer last heard (never higher than what is there), and the
//     writer resumes from it.
//   - Byte slices passed in are not retained.
//   - After Close, every method returns ErrClosed. Close is idempotent.
type BlobStore interface {
	// Create makes blob id, of size bytes, counted against mb's quota q,
	// with Created and Touched now. If id exists it changes nothing and
	// returns its info (ErrBlobSize if its size is not size). A new blob
	// that would take mb past q fails with ErrQuota.
	Create(ctx context.Context, id, mb [16]byte, size int64, now time.Time, q BlobQuota) (BlobInfo, error)
	// Info returns blob id's info, or ErrNotFound.
	Info(ctx context.Context, id [16]byte) (BlobInfo, error)
	// Write writes data at offset off of blob id and returns its info
	// and how many of data's bytes it already had (they are not written
	// again). off beyond Stored fails with ErrBlobGap, data past Size
	// with ErrBlobRange; both change nothing. When Stored reaches Size
	// the store makes the blob durable, computes its digest and marks it
	// Complete before returning. A write to a Complete blob changes
	// nothing. Touched becomes now.
	Write(ctx context.Context, id [16]byte, off int64, data []byte, now time.Time) (info BlobInfo, dup int, err error)
	// Reset empties blob id (Stored 0, not Complete) and returns its info.
	Reset(ctx context.Context, id [16]byte, now time.Time) (BlobInfo, error)
	// ReadAt reads len(p) bytes at off of the Complete blob id, or fewer
	// where it ends, and returns how many. A blob that does not exist or
	// is not Complete is ErrNotFound; off beyond Size is ErrBlobRange.
	ReadAt(ctx context.Context, id [16]byte, p []byte, off int64) (int, error)
	// Usage reports what mb's blobs take.
	Usage(ctx context.Context, mb [16]byte) (BlobUsage, error)
	// Expire deletes every blob created before created, and every blob
	// not Complete last written before touched, and returns how many it
	// deleted.
	Expire(ctx context.Context, created, touched time.Time) (int, error)
	// Close releases the store. See the contracts above.
	Close() error
}
