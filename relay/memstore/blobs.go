package memstore

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"github.com/ferry-im/ferry/relay"
)

var _ relay.BlobStore = (*Blobs)(nil)

// Blobs is an in-memory relay.BlobStore, the fake relay's tests run on and
// the reference of relay/blobtest. Its zero value is not usable; call
// NewBlobs.
type Blobs struct {
	// mu protects closed and blobs.
	mu     sync.Mutex
	closed bool
	blobs  map[[16]byte]*memBlob
}

type memBlob struct {
	info relay.BlobInfo
	data []byte
}

// NewBlobs returns an empty blob store.
func NewBlobs() *Blobs { return &Blobs{blobs: make(map[[16]byte]*memBlob)} }

func (s *Blobs) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return relay.ErrClosed
	}
	return nil
}

// usage sums mb's blobs; mu held.
func (s *Blobs) usage(mb [16]byte) relay.BlobUsage {
	var u relay.BlobUsage
	for _, b := range s.blobs {
		if b.info.Mailbox == mb {
			u.Count++
			u.Bytes += b.info.Size
		}
	}
	return u
}

// Create implements relay.BlobStore.
func (s *Blobs) Create(ctx context.Context, id, mb [16]byte, size int64, now time.Time, q relay.BlobQuota) (relay.BlobInfo, error) {
	if err := s.lock(ctx); err != nil {
		return relay.BlobInfo{}, err
	}
	defer s.mu.Unlock()
	if b := s.blobs[id]; b != nil {
		if b.info.Size != size {
			return b.info, relay.ErrBlobSize
		}
		return b.info, nil
	}
	u := s.usage(mb)
	if (q.MaxCount > 0 && u.Count+1 > q.MaxCount) || (q.MaxBytes > 0 && u.Bytes+size > q.MaxBytes) {
		return relay.BlobInfo{}, relay.ErrQuota
	}
	b := &memBlob{info: relay.BlobInfo{ID: id, Mailbox: mb, Size: size, Created: now, Touched: now}}
	s.blobs[id] = b
	complete(b)
	return b.info, nil
}

// complete marks b complete if all its bytes are in.
func complete(b *memBlob) {
	if !b.info.Complete && b.info.Stored == b.info.Size {
		b.info.Complete = true
		b.info.Digest = sha256.Sum256(b.data)
	}
}

// Info implements relay.BlobStore.
func (s *Blobs) Info(ctx context.Context, id [16]byte) (relay.BlobInfo, error) {
	if err := s.lock(ctx); err != nil {
		return relay.BlobInfo{}, err
	}
	defer s.mu.Unlock()
	b := s.blobs[id]
	if b == nil {
		return relay.BlobInfo{}, relay.ErrNotFound
	}
	return b.info, nil
}

// Write implements relay.BlobStore.
func (s *Blobs) Write(ctx context.Context, id [16]byte, off int64, data []byte, now time.Time) (relay.BlobInfo, int, error) {
	if err := s.lock(ctx); err != nil {
		return relay.BlobInfo{}, 0, err
	}
	defer s.mu.Unlock()
	b := s.blobs[id]
	if b == nil {
		return relay.BlobInfo{}, 0, relay.ErrNotFound
	}
	switch {
	case off < 0 || off > b.info.Stored:
		return b.info, 0, relay.ErrBlobGap
	case off+int64(len(data)) > b.info.Size:
		return b.info, 0, relay.ErrBlobRange
	case b.info.Complete:
		return b.info, len(data), nil
	}
	dup := int(min(int64(len(data)), b.info.Stored-off))
	b.data = append(b.data, data[dup:]...)
	b.info.Stored = int64(len(b.data))
	b.info.Touched = now
	complete(b)
	return b.info, dup, nil
}

// Reset implements relay.BlobStore.
func (s *Blobs) Reset(ctx context.Context, id [16]byte, now time.Time) (relay.BlobInfo, error) {
	if err := s.lock(ctx); err != nil {
		return relay.BlobInfo{}, err
	}
	defer s.mu.Unlock()
	b := s.blobs[id]
	if b == nil {
		return relay.BlobInfo{}, relay.ErrNotFound
	}
	b.data, b.info.Stored, b.info.Complete, b.info.Digest, b.info.Touched = nil, 0, false, [32]byte{}, now
	complete(b)
	return b.info, nil
}

// ReadAt implements relay.BlobStore.
func (s *Blobs) ReadAt(ctx context.Context, id [16]byte, p []byte, off int64) (int, error) {
	if err := s.lock(ctx); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	b := s.blobs[id]
	if b == nil || !b.info.Complete {
		return 0, relay.ErrNotFound
	}
	if off < 0 || off > b.info.Size {
		return 0, relay.ErrBlobRange
	}
	return copy(p, b.data[off:]), nil
}

// Usage implements relay.BlobStore.
func (s *Blobs) Usage(ctx context.Context, mb [16]byte) (relay.BlobUsage, error) {
	if err := s.lock(ctx); err != nil {
		return relay.BlobUsage{}, err
	}
	defer s.mu.Unlock()
	return s.usage(mb), nil
}

// Expire implements relay.BlobStore.
func (s *Blobs) Expire(ctx context.Context, created, touched time.Time) (int, error) {
	if err := s.lock(ctx); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	n := 0
	for id, b := range s.blobs {
		if b.info.Created.Before(created) || (!b.info.Complete && b.info.Touched.Before(touched)) {
			delete(s.blobs, id)
			n++
		}
	}
	return n, nil
}

// Close implements relay.BlobStore.
func (s *Blobs) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
