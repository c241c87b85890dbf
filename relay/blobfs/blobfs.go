// Package blobfs is the relay's blob store on a local file system
// (relay.BlobStore): each blob is a data file holding the bytes written so
// far and a small metadata file, in a directory of the relay's data
// directory. It is the default blob store of ferry-relay.
//
// It is not shared between relays: a cluster needs a store every relay
// reaches (docs/operations.md, "Cluster"). It never interprets the bytes.
//
// Layout, under the store's directory:
//
//	<hh>/<id>.data   the blob's bytes written so far (hh: the id's first byte in hex)
//	<hh>/<id>.meta   version(1)=1 | mailbox(16) | size(8) | created(8, Unix ms)
//	                 | complete(1) | digest(32)          66 bytes, big-endian
//
// The metadata file is replaced atomically (temporary file, fsync, rename,
// directory fsync) when the blob is created, completed or reset; the bytes
// stored are the data file's length, and the time of the last write its
// modification time. A blob is marked complete only after its data file
// is fsync'd, so a complete blob survives a crash of the machine; a write
// that returned survives a crash of the process.
package blobfs

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ferry-im/ferry/internal/atomicfile"
	"github.com/ferry-im/ferry/relay"
)

var _ relay.BlobStore = (*Store)(nil)

const (
	metaVersion = 1
	metaLen     = 1 + 16 + 8 + 8 + 1 + 32
)

// Store is a blob store in one directory. Create it with Open.
type Store struct {
	dir string

	// mu protects closed, blobs and usage.
	mu     sync.Mutex
	closed bool
	blobs  map[[16]byte]*blob
	usage  map[[16]byte]relay.BlobUsage
}

// blob is one blob's state in memory.
type blob struct {
	// mu serialises the blob's writes and protects info, h and hashed.
	mu     sync.Mutex
	info   relay.BlobInfo
	h      hash.Hash // SHA-256 of the first hashed bytes; nil until needed
	hashed int64
	gone   bool // deleted by Expire
}

// Open opens (creating it with mode 0700 if needed) the store in dir and
// reads every blob's metadata. Temporary files left by a crash are
// removed; a blob whose metadata file is missing or damaged is deleted
// (its upload starts again).
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open blob store: %w", err)
	}
	s := &Store{dir: dir, blobs: make(map[[16]byte]*blob), usage: make(map[[16]byte]relay.BlobUsage)}
	subs, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open blob store: %w", err)
	}
	for _, sub := range subs {
		if !sub.IsDir() || len(sub.Name()) != 2 {
			continue
		}
		if err := s.load(filepath.Join(dir, sub.Name())); err != nil {
			return nil, fmt.Errorf("open blob store: %w", err)
		}
	}
	return s, nil
}

// load reads the blobs of one subdirectory.
func (s *Store) load(sub string) error {
	ents, err := os.ReadDir(sub)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(sub, name)
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(path)
			continue
		}
		hexID, ok := strings.CutSuffix(name, ".data")
		raw, err := hex.DecodeString(hexID)
		if !ok || err != nil || len(raw) != 16 {
			continue
		}
		id := [16]byte(raw)
		info, err := readBlob(sub, id)
		if err != nil {
			os.Remove(path)
			os.Remove(filepath.Join(sub, hexID+".meta"))
			continue
		}
		s.blobs[id] = &blob{info: info}
		s.charge(info.Mailbox, 1, info.Size)
	}
	return nil
}

// readBlob reads a blob's metadata and data file state.
func readBlob(sub string, id [16]byte) (relay.BlobInfo, error) {
	name := hex.EncodeToString(id[:])
	m, err := os.ReadFile(filepath.Join(sub, name+".meta"))
	if err != nil {
		return relay.BlobInfo{}, err
	}
	if len(m) != metaLen || m[0] != metaVersion || m[33] > 1 {
		return relay.BlobInfo{}, errors.New("damaged metadata")
	}
	info := relay.BlobInfo{
		ID: id, Mailbox: [16]byte(m[1:17]), Size: int64(binary.BigEndian.Uint64(m[17:25])),
		Created: time.UnixMilli(int64(binary.BigEndian.Uint64(m[25:33]))), Complete: m[33] == 1, Digest: [32]byte(m[34:66]),
	}
	st, err := os.Stat(filepath.Join(sub, name+".data"))
	if err != nil {
		return relay.BlobInfo{}, err
	}
	info.Stored, info.Touched = st.Size(), st.ModTime()
	if info.Stored > info.Size || (info.Complete && info.Stored != info.Size) {
		return relay.BlobInfo{}, errors.New("data file does not match its metadata")
	}
	return info, nil
}

func (s *Store) charge(mb [16]byte, n int, bytes int64) {
	u := s.usage[mb]
	u.Count += n
	u.Bytes += bytes
	if u.Count <= 0 {
		delete(s.usage, mb)
		return
	}
	s.usage[mb] = u
}

// paths returns the data and metadata paths of blob id.
func (s *Store) paths(id [16]byte) (data, meta string) {
	name := hex.EncodeToString(id[:])
	base := filepath.Join(s.dir, name[:2], name)
	return base + ".data", base + ".meta"
}

// get returns blob id, or an error if the store is closed or has none.
func (s *Store) get(ctx context.Context, id [16]byte) (*blob, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, relay.ErrClosed
	}
	b := s.blobs[id]
	if b == nil {
		return nil, relay.ErrNotFound
	}
	return b, nil
}

// Create implements relay.BlobStore.
func (s *Store) Create(ctx context.Context, id, mb [16]byte, size int64, now time.Time, q relay.BlobQuota) (relay.BlobInfo, error) {
	if err := ctx.Err(); err != nil {
		return relay.BlobInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return relay.BlobInfo{}, relay.ErrClosed
	}
	if b := s.blobs[id]; b != nil {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.info.Size != size {
			return b.info, relay.ErrBlobSize
		}
		return b.info, nil
	}
	u := s.usage[mb]
	if (q.MaxCount > 0 && u.Count+1 > q.MaxCount) || (q.MaxBytes > 0 && u.Bytes+size > q.MaxBytes) {
		return relay.BlobInfo{}, relay.ErrQuota
	}
	b := &blob{info: relay.BlobInfo{ID: id, Mailbox: mb, Size: size, Created: now.Truncate(time.Millisecond), Touched: now}}
	if err := s.createFiles(b, now); err != nil {
		return relay.BlobInfo{}, err
	}
	s.blobs[id] = b
	s.charge(mb, 1, size)
	return b.info, nil
}

// createFiles writes a new blob's empty data file and its metadata (the
// metadata last: a data file without it is removed at Open).
func (s *Store) createFiles(b *blob, now time.Time) error {
	data, _ := s.paths(b.info.ID)
	if err := os.MkdirAll(filepath.Dir(data), 0o700); err != nil {
		return fmt.Errorf("create blob: %w", err)
	}
	f, err := os.OpenFile(data, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create blob: %w", err)
	}
	f.Close()
	os.Chtimes(data, now, now)
	if b.info.Size == 0 {
		b.info.Complete, b.info.Digest = true, sha256.Sum256(nil)
	}
	if err := s.writeMeta(b.info); err != nil {
		os.Remove(data)
		return fmt.Errorf("create blob: %w", err)
	}
	return nil
}

// writeMeta replaces a blob's metadata file atomically and durably.
func (s *Store) writeMeta(info relay.BlobInfo) error {
	_, meta := s.paths(info.ID)
	m := make([]byte, 0, metaLen)
	m = append(m, metaVersion)
	m = append(m, info.Mailbox[:]...)
	m = binary.BigEndian.AppendUint64(m, uint64(info.Size))
	m = binary.BigEndian.AppendUint64(m, uint64(info.Created.UnixMilli()))
	complete := byte(0)
	if info.Complete {
		complete = 1
	}
	m = append(m, complete)
	m = append(m, info.Digest[:]...)
	return atomicfile.Write(meta, m)
}

// Info implements relay.BlobStore.
func (s *Store) Info(ctx context.Context, id [16]byte) (relay.BlobInfo, error) {
	b, err := s.get(ctx, id)
	if err != nil {
		return relay.BlobInfo{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gone {
		return relay.BlobInfo{}, relay.ErrNotFound
	}
	return b.info, nil
}

// Write implements relay.BlobStore.
func (s *Store) Write(ctx context.Context, id [16]byte, off int64, data []byte, now time.Time) (relay.BlobInfo, int, error) {
	b, err := s.get(ctx, id)
	if err != nil {
		return relay.BlobInfo{}, 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.gone:
		return relay.BlobInfo{}, 0, relay.ErrNotFound
	case off < 0 || off > b.info.Stored:
		return b.info, 0, relay.ErrBlobGap
	case off+int64(len(data)) > b.info.Size:
		return b.info, 0, relay.ErrBlobRange
	case b.info.Complete:
		return b.info, len(data), nil
	}
	dup := int(min(int64(len(data)), b.info.Stored-off))
	if err := s.append(b, data[dup:], now); err != nil {
		return b.info, 0, fmt.Errorf("write blob: %w", err)
	}
	return b.info, dup, nil
}

// append writes p at the end of b's data and completes b if that was its
// last byte; b.mu held.
func (s *Store) append(b *blob, p []byte, now time.Time) error {
	path, _ := s.paths(b.info.ID)
	if err := s.catchUpHash(b, path); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if len(p) > 0 {
		if _, err := f.WriteAt(p, b.info.Stored); err != nil {
			// Whatever part of p reached the file is counted at Open; here
			// the file is cut back so that Stored stays exact.
			f.Truncate(b.info.Stored)
			return err
		}
		b.h.Write(p)
		b.info.Stored += int64(len(p))
		b.hashed = b.info.Stored
	}
	b.info.Touched = now
	os.Chtimes(path, now, now)
	if b.info.Stored < b.info.Size {
		return nil
	}
	if err := f.Sync(); err != nil {
		return err
	}
	info := b.info
	info.Complete = true
	info.Digest = [32]byte(b.h.Sum(nil))
	if err := s.writeMeta(info); err != nil {
		return err
	}
	b.info, b.h = info, nil
	return nil
}

// catchUpHash makes b.h the hash of the bytes stored, reading them back
// after a restart; b.mu held.
func (s *Store) catchUpHash(b *blob, path string) error {
	if b.h != nil && b.hashed == b.info.Stored {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, b.info.Stored)); err != nil {
		return err
	}
	b.h, b.hashed = h, b.info.Stored
	return nil
}

// Reset implements relay.BlobStore.
func (s *Store) Reset(ctx context.Context, id [16]byte, now time.Time) (relay.BlobInfo, error) {
	b, err := s.get(ctx, id)
	if err != nil {
		return relay.BlobInfo{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gone {
		return relay.BlobInfo{}, relay.ErrNotFound
	}
	info := b.info
	info.Stored, info.Complete, info.Digest, info.Touched = 0, false, [32]byte{}, now
	if err := s.createFiles(&blob{info: info}, now); err != nil {
		return b.info, err
	}
	if info.Size == 0 {
		info.Complete, info.Digest = true, sha256.Sum256(nil)
	}
	b.info, b.h, b.hashed = info, nil, 0
	return b.info, nil
}

// ReadAt implements relay.BlobStore.
func (s *Store) ReadAt(ctx context.Context, id [16]byte, p []byte, off int64) (int, error) {
	b, err := s.get(ctx, id)
	if err != nil {
		return 0, err
	}
	b.mu.Lock()
	info, gone := b.info, b.gone
	b.mu.Unlock()
	if gone || !info.Complete {
		return 0, relay.ErrNotFound
	}
	if off < 0 || off > info.Size {
		return 0, relay.ErrBlobRange
	}
	path, _ := s.paths(id)
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read blob: %w", err)
	}
	defer f.Close()
	n, err := f.ReadAt(p[:min(int64(len(p)), info.Size-off)], off)
	if err == io.EOF {
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("read blob: %w", err)
	}
	return n, nil
}

// Usage implements relay.BlobStore.
func (s *Store) Usage(ctx context.Context, mb [16]byte) (relay.BlobUsage, error) {
	if err := ctx.Err(); err != nil {
		return relay.BlobUsage{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return relay.BlobUsage{}, relay.ErrClosed
	}
	return s.usage[mb], nil
}

// Expire implements relay.BlobStore.
func (s *Store) Expire(ctx context.Context, created, touched time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, relay.ErrClosed
	}
	var old []*blob
	for id, b := range s.blobs {
		b.mu.Lock()
		if b.info.Created.Before(created) || (!b.info.Complete && b.info.Touched.Before(touched)) {
			b.gone = true
			old = append(old, b)
			delete(s.blobs, id)
			s.charge(b.info.Mailbox, -1, -b.info.Size)
		}
		b.mu.Unlock()
	}
	s.mu.Unlock()
	for _, b := range old {
		data, meta := s.paths(b.info.ID)
		os.Remove(meta)
		os.Remove(data)
	}
	return len(old), nil
}

// Close implements relay.BlobStore. Writes in flight finish first.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	blobs := make([]*blob, 0, len(s.blobs))
	for _, b := range s.blobs {
		blobs = append(blobs, b)
	}
	s.mu.Unlock()
	for _, b := range blobs {
		b.mu.Lock()
		//lint:ignore SA2001 taking the lock waits for a write in flight
		b.mu.Unlock()
	}
	return nil
}
