package postgres

import (
	"context"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ferry-im/ferry/relay"
)

var _ relay.BlobStore = (*Blobs)(nil)

// Blobs is a relay.BlobStore in PostgreSQL, which every relay of a
// cluster shares (docs/operations.md, "Cluster"): a blob is a row of
// ferry_blobs (its size, mailbox, times, state and the SHA-256 state of
// the bytes stored so far) and its bytes are rows of ferry_blob_pieces,
// one per piece written. Each write is one transaction that locks the
// blob's row, so two relays writing one blob take turns, and returns once
// committed (durable with PostgreSQL's default synchronous_commit). Its
// tables are its own, made by OpenBlobs if missing; it may share a
// database with Store.
type Blobs struct {
	pool   *pgxpool.Pool
	closed atomic.Bool
}

const blobSchema = `
CREATE TABLE IF NOT EXISTS ferry_blobs (
	id bytea PRIMARY KEY,
	mailbox bytea NOT NULL,
	size bigint NOT NULL,
	stored bigint NOT NULL DEFAULT 0,
	created bigint NOT NULL,
	touched bigint NOT NULL,
	complete boolean NOT NULL DEFAULT false,
	digest bytea,
	hash bytea
);
CREATE INDEX IF NOT EXISTS ferry_blobs_mailbox ON ferry_blobs (mailbox);
CREATE TABLE IF NOT EXISTS ferry_blob_pieces (
	id bytea NOT NULL,
	off bigint NOT NULL,
	data bytea NOT NULL,
	PRIMARY KEY (id, off)
);`

// OpenBlobs connects to the database at url and makes the blob tables if
// they are missing.
func OpenBlobs(ctx context.Context, url string) (*Blobs, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("open blob store: %w", err)
	}
	// Concurrent first opens race on CREATE ... IF NOT EXISTS: serialise.
	_, err = pool.Exec(ctx, `SELECT pg_advisory_lock(7354)`)
	if err == nil {
		_, err = pool.Exec(ctx, blobSchema)
		pool.Exec(ctx, `SELECT pg_advisory_unlock(7354)`)
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open blob store: %w", err)
	}
	return &Blobs{pool: pool}, nil
}

// Close closes the connections. Calls after it fail with relay.ErrClosed.
// It is idempotent.
func (b *Blobs) Close() error {
	if !b.closed.Swap(true) {
		b.pool.Close()
	}
	return nil
}

// fail turns a database error into the BlobStore's.
func (b *Blobs) fail(err error) error {
	switch {
	case b.closed.Load():
		return relay.ErrClosed
	case errors.Is(err, pgx.ErrNoRows):
		return relay.ErrNotFound
	}
	return err
}

const blobCols = `id, mailbox, size, stored, created, touched, complete, coalesce(digest, ''), coalesce(hash, '')`

// blobRow is a ferry_blobs row.
type blobRow struct {
	info relay.BlobInfo
	hash []byte
}

func scanBlob(row pgx.Row) (*blobRow, error) {
	var r blobRow
	var id, mb, digest []byte
	var created, touched int64
	if err := row.Scan(&id, &mb, &r.info.Size, &r.info.Stored, &created, &touched, &r.info.Complete, &digest, &r.hash); err != nil {
		return nil, err
	}
	r.info.ID, r.info.Mailbox = [16]byte(id), [16]byte(mb)
	r.info.Created, r.info.Touched = time.UnixMilli(created), time.UnixMilli(touched)
	copy(r.info.Digest[:], digest)
	return &r, nil
}

// Create implements relay.BlobStore.
func (b *Blobs) Create(ctx context.Context, id, mb [16]byte, size int64, now time.Time, q relay.BlobQuota) (relay.BlobInfo, error) {
	if b.closed.Load() {
		return relay.BlobInfo{}, relay.ErrClosed
	}
	var info relay.BlobInfo
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		// One mailbox's creations take turns, so the quota holds.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended(encode($1, 'hex'), 0))`, mb[:]); err != nil {
			return err
		}
		if r, err := scanBlob(tx.QueryRow(ctx, `SELECT `+blobCols+` FROM ferry_blobs WHERE id = $1`, id[:])); err == nil {
			info = r.info
			if info.Size != size {
				return relay.ErrBlobSize
			}
			return nil
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		var count int
		var bytes int64
		if err := tx.QueryRow(ctx, `SELECT count(*), coalesce(sum(size), 0)::bigint FROM ferry_blobs WHERE mailbox = $1`, mb[:]).Scan(&count, &bytes); err != nil {
			return err
		}
		if (q.MaxCount > 0 && count+1 > q.MaxCount) || (q.MaxBytes > 0 && bytes+size > q.MaxBytes) {
			return relay.ErrQuota
		}
		info = relay.BlobInfo{ID: id, Mailbox: mb, Size: size, Created: time.UnixMilli(now.UnixMilli()), Touched: time.UnixMilli(now.UnixMilli())}
		var digest []byte
		if size == 0 {
			info.Complete, info.Digest = true, sha256.Sum256(nil)
			digest = info.Digest[:]
		}
		_, err := tx.Exec(ctx, `INSERT INTO ferry_blobs (id, mailbox, size, created, touched, complete, digest) VALUES ($1, $2, $3, $4, $4, $5, $6)`,
			id[:], mb[:], size, now.UnixMilli(), info.Complete, digest)
		return err
	})
	if err != nil && !errors.Is(err, relay.ErrBlobSize) && !errors.Is(err, relay.ErrQuota) {
		return relay.BlobInfo{}, b.fail(err)
	}
	return info, err
}

// Info implements relay.BlobStore.
func (b *Blobs) Info(ctx context.Context, id [16]byte) (relay.BlobInfo, error) {
	if b.closed.Load() {
		return relay.BlobInfo{}, relay.ErrClosed
	}
	r, err := scanBlob(b.pool.QueryRow(ctx, `SELECT `+blobCols+` FROM ferry_blobs WHERE id = $1`, id[:]))
	if err != nil {
		return relay.BlobInfo{}, b.fail(err)
	}
	return r.info, nil
}

// Write implements relay.BlobStore.
func (b *Blobs) Write(ctx context.Context, id [16]byte, off int64, data []byte, now time.Time) (relay.BlobInfo, int, error) {
	if b.closed.Load() {
		return relay.BlobInfo{}, 0, relay.ErrClosed
	}
	var info relay.BlobInfo
	dup := 0
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		r, err := scanBlob(tx.QueryRow(ctx, `SELECT `+blobCols+` FROM ferry_blobs WHERE id = $1 FOR UPDATE`, id[:]))
		if err != nil {
			return err
		}
		info = r.info
		switch {
		case off < 0 || off > info.Stored:
			return relay.ErrBlobGap
		case off+int64(len(data)) > info.Size:
			return relay.ErrBlobRange
		case info.Complete:
			dup = len(data)
			return nil
		}
		dup = int(min(int64(len(data)), info.Stored-off))
		return b.append(ctx, tx, r, data[dup:], now, &info)
	})
	if err != nil && !errors.Is(err, relay.ErrBlobGap) && !errors.Is(err, relay.ErrBlobRange) {
		return relay.BlobInfo{}, 0, b.fail(err)
	}
	if err != nil {
		return info, 0, err
	}
	return info, dup, nil
}

// append stores p at the end of blob r and updates its row (and info),
// completing it if that was its last byte.
func (b *Blobs) append(ctx context.Context, tx pgx.Tx, r *blobRow, p []byte, now time.Time, info *relay.BlobInfo) error {
	h := sha256.New()
	if len(r.hash) > 0 {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(r.hash); err != nil {
			return fmt.Errorf("blob hash state: %w", err)
		}
	}
	if len(p) > 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO ferry_blob_pieces (id, off, data) VALUES ($1, $2, $3)`, info.ID[:], info.Stored, p); err != nil {
			return err
		}
		h.Write(p)
		info.Stored += int64(len(p))
	}
	info.Touched = time.UnixMilli(now.UnixMilli())
	var digest []byte
	if info.Stored == info.Size {
		info.Complete, info.Digest = true, [32]byte(h.Sum(nil))
		digest = info.Digest[:]
	}
	state, err := marshalHash(h)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE ferry_blobs SET stored = $2, touched = $3, complete = $4, digest = $5, hash = $6 WHERE id = $1`,
		info.ID[:], info.Stored, now.UnixMilli(), info.Complete, digest, state)
	return err
}

func marshalHash(h hash.Hash) ([]byte, error) {
	return h.(encoding.BinaryMarshaler).MarshalBinary()
}

// Reset implements relay.BlobStore.
func (b *Blobs) Reset(ctx context.Context, id [16]byte, now time.Time) (relay.BlobInfo, error) {
	if b.closed.Load() {
		return relay.BlobInfo{}, relay.ErrClosed
	}
	var info relay.BlobInfo
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		r, err := scanBlob(tx.QueryRow(ctx, `SELECT `+blobCols+` FROM ferry_blobs WHERE id = $1 FOR UPDATE`, id[:]))
		if err != nil {
			return err
		}
		info = r.info
		info.Stored, info.Complete, info.Digest, info.Touched = 0, false, [32]byte{}, time.UnixMilli(now.UnixMilli())
		var digest []byte
		if info.Size == 0 {
			info.Complete, info.Digest = true, sha256.Sum256(nil)
			digest = info.Digest[:]
		}
		if _, err := tx.Exec(ctx, `DELETE FROM ferry_blob_pieces WHERE id = $1`, id[:]); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE ferry_blobs SET stored = 0, touched = $2, complete = $3, digest = $4, hash = NULL WHERE id = $1`,
			id[:], now.UnixMilli(), info.Complete, digest)
		return err
	})
	if err != nil {
		return relay.BlobInfo{}, b.fail(err)
	}
	return info, nil
}

// ReadAt implements relay.BlobStore.
func (b *Blobs) ReadAt(ctx context.Context, id [16]byte, p []byte, off int64) (int, error) {
	info, err := b.Info(ctx, id)
	if err != nil {
		return 0, err
	}
	if !info.Complete {
		return 0, relay.ErrNotFound
	}
	if off < 0 || off > info.Size {
		return 0, relay.ErrBlobRange
	}
	end := min(off+int64(len(p)), info.Size)
	rows, err := b.pool.Query(ctx, `SELECT off, data FROM ferry_blob_pieces WHERE id = $1 AND off < $3 AND off + length(data) > $2 ORDER BY off`,
		id[:], off, end)
	if err != nil {
		return 0, b.fail(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var at int64
		var data []byte
		if err := rows.Scan(&at, &data); err != nil {
			return n, err
		}
		from := max(off, at)
		n += copy(p[from-off:end-off], data[from-at:])
	}
	return n, rows.Err()
}

// Usage implements relay.BlobStore.
func (b *Blobs) Usage(ctx context.Context, mb [16]byte) (relay.BlobUsage, error) {
	if b.closed.Load() {
		return relay.BlobUsage{}, relay.ErrClosed
	}
	var u relay.BlobUsage
	err := b.pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(size), 0)::bigint FROM ferry_blobs WHERE mailbox = $1`, mb[:]).Scan(&u.Count, &u.Bytes)
	if err != nil {
		return u, b.fail(err)
	}
	return u, nil
}

// Expire implements relay.BlobStore.
func (b *Blobs) Expire(ctx context.Context, created, touched time.Time) (int, error) {
	if b.closed.Load() {
		return 0, relay.ErrClosed
	}
	n := 0
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM ferry_blobs WHERE created < $1 OR (NOT complete AND touched < $2) RETURNING id`,
			created.UnixMilli(), touched.UnixMilli())
		if err != nil {
			return err
		}
		var ids [][]byte
		for rows.Next() {
			var id []byte
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		n = len(ids)
		if n == 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `DELETE FROM ferry_blob_pieces WHERE id = ANY($1)`, ids)
		return err
	})
	if err != nil {
		return 0, b.fail(err)
	}
	return n, nil
}
