// Package sqlite is the relay's default Store: one embedded SQLite database
// file (modernc.org/sqlite, pure Go, no cgo).
//
// It is durable: the database runs in WAL mode with synchronous=FULL, and a
// write returns only after its transaction is committed and the WAL is
// fsync'd, so an acknowledged send survives kill -9 or a power cut. To make
// that affordable it group-commits: one writer goroutine, owned by the
// Store, takes every write that is waiting, runs them all in one
// transaction and pays for one fsync. Reads run on a separate pool of
// read-only connections and never wait for the writer.
//
// It is not a shared database: one relay process owns the file. The schema
// is versioned (PRAGMA user_version) and migrated forward by Open.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/internal/rowscan"
	"github.com/ferry-im/ferry/relay/internal/tokencache"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

var (
	_ relay.Store         = (*Store)(nil)
	_ relay.AsyncPutter   = (*Store)(nil)
	_ relay.PollingPutter = (*Store)(nil)
	_ relay.Sizer         = (*Store)(nil)
)

// Options tunes a Store. The zero value is what the relay uses.
type Options struct {
	// MaxBatch is the most writes committed in one transaction. If zero,
	// 512.
	MaxBatch int
	// Readers is the number of read-only connections. If zero, 4.
	Readers int
	// MustExist makes Open fail with ErrMissing instead of creating a
	// database when path does not exist. cmd/ferry-relay sets it once its
	// data directory has held a relay, so that a lost database is never
	// silently replaced by an empty one.
	MustExist bool
	// QuickCheck makes Open run SQLite's quick_check instead of the full
	// integrity_check (about 9 s per GiB on the reference machine; the
	// quick check takes a quarter of that but does not compare indexes
	// with their tables).
	QuickCheck bool
}

func (o *Options) mustExist() bool  { return o != nil && o.MustExist }
func (o *Options) quickCheck() bool { return o != nil && o.QuickCheck }

func (o *Options) maxBatch() int {
	if o == nil || o.MaxBatch <= 0 {
		return 512
	}
	return o.MaxBatch
}

func (o *Options) readers() int {
	if o == nil || o.Readers <= 0 {
		return 4
	}
	return o.Readers
}

// Store is a relay.Store in one SQLite database file.
type Store struct {
	path     string
	w        *writer
	wdb, rdb *sql.DB
	read     readStmts
	ops      chan *op
	done     chan struct{} // closed when the writer goroutine has returned
	maxBatch int

	tokens tokencache.Cache // exact: only this Store writes tokens

	// mu protects closed. Every method holds it for reading for its whole
	// call, so Close (which takes it for writing) waits for calls in
	// flight and then stops the writer.
	mu     sync.RWMutex
	closed bool
}

// Stats counts the writer's work since Open.
type Stats struct {
	// Writes is the number of writes committed or refused.
	Writes uint64
	// Batches is the number of transactions (and fsyncs) they took.
	Batches uint64
}

// Stats reports the writer's counters: Writes/Batches is the average
// group-commit size.
func (s *Store) Stats() Stats {
	return Stats{Writes: s.w.writes.Load(), Batches: s.w.batches.Load()}
}

// Path is the database file the Store was opened on.
func (s *Store) Path() string { return s.path }

// Close stops the writer once the writes in flight are committed and
// closes the database. It is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	close(s.ops)
	s.mu.Unlock()
	<-s.done
	return errors.Join(s.read.close(), s.rdb.Close(), s.wdb.Close())
}

// begin holds mu for reading for the duration of one call, failing once
// the store is closed.
func (s *Store) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return relay.ErrClosed
	}
	return nil
}

// write runs fn in the writer's next batch and waits for the commit. If ctx
// is done before the writer starts fn, fn is not run and ctx's error is
// returned; otherwise the call waits, so an error always means no effect.
func (s *Store) write(ctx context.Context, fn func(b *writer) error) error {
	wait, _ := s.submit(ctx, fn)
	return wait()
}

// submit queues fn for the writer and returns the wait for its outcome,
// and ready, which reports without blocking whether wait would return at
// once. Writes submitted one after another run in that order. The store
// stays open (mu held for reading) until wait is called.
func (s *Store) submit(ctx context.Context, fn func(b *writer) error) (wait func() error, ready func() bool) {
	if err := s.begin(ctx); err != nil {
		return func() error { return err }, isReady
	}
	o := &op{ctx: ctx, run: fn, err: make(chan error, 1)}
	select {
	case s.ops <- o:
	case <-ctx.Done():
		s.mu.RUnlock()
		return func() error { return ctx.Err() }, isReady
	}
	wait = func() error {
		defer s.mu.RUnlock()
		return damaged(<-o.err)
	}
	// The writer sends the outcome into the buffered channel, where it
	// stays until wait takes it.
	ready = func() bool { return len(o.err) > 0 }
	return wait, ready
}

func isReady() bool { return true }

// Put implements relay.Store.
func (s *Store) Put(ctx context.Context, mb [16]byte, env relay.Envelope, q relay.Quota) (seq uint64, dup bool, err error) {
	wait, _ := s.putAsync(ctx, mb, env, q)
	return wait()
}

// PutAsync implements relay.AsyncPutter.
func (s *Store) PutAsync(ctx context.Context, mb [16]byte, env relay.Envelope, q relay.Quota) func() (uint64, bool, error) {
	wait, _ := s.PutAsyncPoll(ctx, mb, env, q)
	return wait
}

// PutAsyncPoll implements relay.PollingPutter.
func (s *Store) PutAsyncPoll(ctx context.Context, mb [16]byte, env relay.Envelope, q relay.Quota) (func() (uint64, bool, error), func() bool) {
	env.Data = slices.Clone(env.Data)
	return s.putAsync(ctx, mb, env, q)
}

// putAsync is PutAsyncPoll without the copy: env.Data must stay unchanged
// until the wait returns.
func (s *Store) putAsync(ctx context.Context, mb [16]byte, env relay.Envelope, q relay.Quota) (func() (uint64, bool, error), func() bool) {
	var (
		seq uint64
		dup bool
	)
	wait, ready := s.submit(ctx, func(w *writer) error {
		seq, dup = 0, false
		box, err := w.box(mb)
		if err != nil {
			return err
		}
		if !box.exists {
			return relay.ErrNotFound
		}
		// An acknowledged id is remembered in acked only.
		var one int
		switch err := w.ackedFind.QueryRow(mb[:], env.ID[:]).Scan(&one); {
		case err == nil:
			dup = true
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("find acknowledged id: %w", err)
		}
		size := int64(len(env.Data))
		full := q.MaxCount > 0 && box.count+1 > q.MaxCount || q.MaxBytes > 0 && box.bytes+size > q.MaxBytes
		inserted := false
		if !full {
			res, err := w.envInsert.Exec(mb[:], int64(box.nextSeq), env.ID[:], env.Received.UnixMilli(), size, nonNil(env.Data))
			if err != nil {
				return fmt.Errorf("insert envelope: %w", err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("insert envelope: %w", err)
			}
			inserted = n == 1
		}
		if !inserted {
			// Either a retry of a stored id (the insert was ignored) or a
			// full mailbox, where a retry still succeeds.
			var old int64
			switch err := w.envFind.QueryRow(mb[:], env.ID[:]).Scan(&old); {
			case err == nil:
				seq, dup = uint64(old), true
				return nil
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("find envelope: %w", err)
			case full:
				return relay.ErrQuota
			default:
				return fmt.Errorf("insert envelope: ignored but not found")
			}
		}
		seq = box.nextSeq
		box.nextSeq++
		box.count++
		box.bytes += size
		box.dirty = true
		return nil
	})
	return func() (uint64, bool, error) {
		if err := wait(); err != nil {
			return 0, false, err
		}
		return seq, dup, nil
	}, ready
}

// Ack implements relay.Store. The seqs that can name a pending envelope
// go to the database in one statement, as a JSON array: each once, only
// those already assigned, and, when the Ack names more than the mailbox
// holds, only those pending (read from the seq index). An Ack's cost is
// thus bounded by what the mailbox holds, not by what a client names: an
// Ack of 4,096 made-up seqs to an empty mailbox costs no statement.
func (s *Store) Ack(ctx context.Context, mb [16]byte, seqs []uint64) (int, error) {
	if len(seqs) == 0 {
		if err := s.begin(ctx); err != nil {
			return 0, err
		}
		s.mu.RUnlock()
		return 0, nil
	}
	var n int
	err := s.write(ctx, func(w *writer) error {
		n = 0
		box, err := w.box(mb)
		if err != nil || !box.exists || box.count == 0 {
			return err
		}
		seqs := assigned(seqs, box.nextSeq)
		if len(seqs) > box.count {
			if seqs, err = w.pendingAmong(mb, seqs); err != nil {
				return fmt.Errorf("acknowledge envelopes: %w", err)
			}
		}
		if len(seqs) == 0 {
			return nil
		}
		list := make([]byte, 0, 1+21*len(seqs))
		list = append(list, '[')
		for i, seq := range seqs {
			if i > 0 {
				list = append(list, ',')
			}
			list = strconv.AppendUint(list, seq, 10)
		}
		list = append(list, ']')
		if _, err := w.ackedInsert.Exec(mb[:], string(list)); err != nil {
			return fmt.Errorf("acknowledge envelopes: %w", err)
		}
		rows, err := w.envAck.Query(mb[:], string(list))
		if err != nil {
			return fmt.Errorf("acknowledge envelopes: %w", err)
		}
		for rows.Next() {
			var size int64
			if err := rows.Scan(&size); err != nil {
				rows.Close()
				return fmt.Errorf("acknowledge envelopes: %w", err)
			}
			n++
			box.count--
			box.bytes -= size
			box.dirty = true
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("acknowledge envelopes: %w", err)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("acknowledge envelopes: %w", err)
		}
		return nil
	})
	return n, err
}

// assigned returns the seqs below next (those assigned so far), sorted,
// each once, in a new slice.
func assigned(seqs []uint64, next uint64) []uint64 {
	out := make([]uint64, 0, len(seqs))
	for _, q := range seqs {
		if q > 0 && q < next {
			out = append(out, q)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// pendingAmong returns those of the sorted seqs that name a pending
// envelope of mb, reading mb's pending seqs from the index.
func (w *writer) pendingAmong(mb [16]byte, seqs []uint64) ([]uint64, error) {
	rows, err := w.envSeqs.Query(mb[:])
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []uint64
	for rows.Next() {
		var q uint64
		if err := rows.Scan(&q); err != nil {
			return nil, err
		}
		if _, ok := slices.BinarySearch(seqs, q); ok {
			out = append(out, q)
		}
	}
	return out, rows.Err()
}

// expireChunk is how many rows one Expire transaction deletes at most, so
// a large expiry never holds up sends for long.
const expireChunk = 2000

// Expire implements relay.Store. It deletes in chunks of expireChunk rows,
// one transaction each: first expired envelopes, then acknowledged ids
// received on a day before cutoff's.
func (s *Store) Expire(ctx context.Context, cutoff time.Time) (int, error) {
	total := 0
	for {
		var rows int
		err := s.write(ctx, func(w *writer) error {
			n, err := w.expireEnvelopes(cutoff)
			rows = n
			return err
		})
		if err != nil {
			return total, err
		}
		total += rows
		if rows < expireChunk {
			break
		}
	}
	for {
		var rows int64
		err := s.write(ctx, func(w *writer) error {
			res, err := w.ackedExpire.Exec(unixDay(cutoff), expireChunk)
			if err != nil {
				return fmt.Errorf("expire acknowledged ids: %w", err)
			}
			rows, err = res.RowsAffected()
			return err
		})
		if err != nil {
			return total, err
		}
		if rows < expireChunk {
			return total, nil
		}
	}
}

// expireEnvelopes deletes up to expireChunk envelopes received before
// cutoff and returns how many.
func (w *writer) expireEnvelopes(cutoff time.Time) (int, error) {
	res, err := w.envExpire.Query(cutoff.UnixMilli(), expireChunk)
	if err != nil {
		return 0, fmt.Errorf("expire envelopes: %w", err)
	}
	type gone struct {
		mb   [16]byte
		size int64
	}
	var deleted []gone
	for res.Next() {
		var g gone
		var mb []byte
		if err := res.Scan(&mb, &g.size); err != nil {
			res.Close()
			return 0, fmt.Errorf("expire envelopes: %w", err)
		}
		copy(g.mb[:], mb)
		deleted = append(deleted, g)
	}
	if err := res.Close(); err != nil {
		return 0, fmt.Errorf("expire envelopes: %w", err)
	}
	if err := res.Err(); err != nil {
		return 0, fmt.Errorf("expire envelopes: %w", err)
	}
	for _, g := range deleted {
		box, err := w.box(g.mb)
		if err != nil {
			return 0, err
		}
		box.count--
		box.bytes -= g.size
		box.dirty = true
	}
	return len(deleted), nil
}

// unixDay is the UTC day of t, in days since 1970-01-01.
func unixDay(t time.Time) int64 { return t.Unix() / 86400 }

// SetToken implements relay.Store.
func (s *Store) SetToken(ctx context.Context, mb [16]byte, hash [32]byte) error {
	return s.tokenWrite(ctx, mb, func(w *writer) error {
		if err := w.ensure(mb); err != nil {
			return err
		}
		if _, err := w.tokenClear.Exec(mb[:]); err != nil {
			return fmt.Errorf("set token: %w", err)
		}
		if _, err := w.tokenAdd.Exec(mb[:], hash[:]); err != nil {
			return fmt.Errorf("set token: %w", err)
		}
		return nil
	})
}

// AddToken implements relay.Store.
func (s *Store) AddToken(ctx context.Context, mb [16]byte, hash [32]byte, max int) error {
	return s.tokenWrite(ctx, mb, func(w *writer) error {
		var one int
		switch err := w.tokenHas.QueryRow(mb[:], hash[:]).Scan(&one); {
		case err == nil:
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("add token: %w", err)
		}
		if max > 0 {
			var n int
			if err := w.tokenCount.QueryRow(mb[:]).Scan(&n); err != nil {
				return fmt.Errorf("add token: %w", err)
			}
			if n >= max {
				return relay.ErrQuota
			}
		}
		if err := w.ensure(mb); err != nil {
			return err
		}
		if _, err := w.tokenAdd.Exec(mb[:], hash[:]); err != nil {
			return fmt.Errorf("add token: %w", err)
		}
		return nil
	})
}

// RemoveToken implements relay.Store.
func (s *Store) RemoveToken(ctx context.Context, mb [16]byte, hash [32]byte) error {
	return s.tokenWrite(ctx, mb, func(w *writer) error {
		if _, err := w.tokenDel.Exec(mb[:], hash[:]); err != nil {
			return fmt.Errorf("remove token: %w", err)
		}
		return nil
	})
}

// tokenWrite runs a write that changes mb's tokens and keeps the cache
// exact: mb's cached hashes are dropped once it has committed (and reads
// that began before it do not fill the cache).
func (s *Store) tokenWrite(ctx context.Context, mb [16]byte, fn func(w *writer) error) error {
	err := s.write(ctx, fn)
	s.tokens.Invalidate(mb)
	return err
}

// Touch implements relay.Store.
func (s *Store) Touch(ctx context.Context, mb [16]byte, t time.Time) error {
	return s.write(ctx, func(w *writer) error {
		if _, err := w.boxTouch.Exec(mb[:], unixDay(t)); err != nil {
			return fmt.Errorf("touch mailbox: %w", err)
		}
		return nil
	})
}

// idleChunk is how many mailboxes one DeleteIdle transaction deletes.
const idleChunk = 100

// DeleteIdle implements relay.Store, idleChunk mailboxes per transaction.
func (s *Store) DeleteIdle(ctx context.Context, cutoff time.Time) (int, error) {
	total := 0
	for {
		var deleted [][16]byte
		err := s.write(ctx, func(w *writer) (err error) {
			deleted, err = w.deleteIdle(unixDay(cutoff))
			return err
		})
		if err != nil {
			return total, err
		}
		for _, mb := range deleted {
			s.tokens.Invalidate(mb)
		}
		total += len(deleted)
		if len(deleted) < idleChunk {
			return total, nil
		}
	}
}

// deleteIdle deletes up to idleChunk mailboxes last seen before day.
func (w *writer) deleteIdle(day int64) ([][16]byte, error) {
	rows, err := w.idleFind.Query(day, idleChunk)
	if err != nil {
		return nil, fmt.Errorf("find idle mailboxes: %w", err)
	}
	var ids [][16]byte
	for rows.Next() {
		var id []byte
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("find idle mailboxes: %w", err)
		}
		ids = append(ids, [16]byte(id))
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("find idle mailboxes: %w", err)
	}
	for _, mb := range ids {
		for _, st := range w.idleDelete {
			if _, err := st.Exec(mb[:]); err != nil {
				return nil, fmt.Errorf("delete idle mailbox: %w", err)
			}
		}
		w.boxes[mb] = &boxState{}
	}
	return ids, nil
}

// PutPrekeys implements relay.Store.
func (s *Store) PutPrekeys(ctx context.Context, mb [16]byte, up relay.PrekeyUpload, max int) error {
	return s.write(ctx, func(w *writer) error {
		if err := w.ensure(mb); err != nil {
			return err
		}
		return w.savepoint(func() error {
			for _, pool := range []struct {
				kind int
				keys []relay.Prekey
			}{{kindOneTime, up.OneTime}, {kindKEM, up.KEM}} {
				for _, p := range pool.keys {
					if _, err := w.prekeyPut.Exec(mb[:], pool.kind, int64(p.ID), nonNil(p.Data)); err != nil {
						return fmt.Errorf("store prekey: %w", err)
					}
				}
				if max <= 0 || len(pool.keys) == 0 {
					continue
				}
				var n int
				if err := w.prekeyCount.QueryRow(mb[:], pool.kind).Scan(&n); err != nil {
					return fmt.Errorf("count prekeys: %w", err)
				}
				if n > max {
					return relay.ErrQuota
				}
			}
			if len(up.Signed) > 0 {
				if _, err := w.setSigned.Exec(up.Signed, mb[:]); err != nil {
					return fmt.Errorf("store signed prekey: %w", err)
				}
			}
			if len(up.LastResort) > 0 {
				if _, err := w.setLastResort.Exec(up.LastResort, mb[:]); err != nil {
					return fmt.Errorf("store last-resort prekey: %w", err)
				}
			}
			return nil
		})
	})
}

// PopBundle implements relay.Store.
func (s *Store) PopBundle(ctx context.Context, mb [16]byte) (relay.Bundle, error) {
	var b relay.Bundle
	err := s.write(ctx, func(w *writer) error {
		b = relay.Bundle{}
		var lastResort []byte
		switch err := w.bundleGet.QueryRow(mb[:]).Scan(&b.Signed, &lastResort); {
		case errors.Is(err, sql.ErrNoRows):
			return relay.ErrNotFound
		case err != nil:
			return fmt.Errorf("read bundle: %w", err)
		}
		if len(b.Signed) == 0 {
			return relay.ErrNotFound
		}
		var err error
		if b.OneTime, b.HasOneTime, err = w.pop(mb, kindOneTime); err != nil {
			return err
		}
		if b.KEM, b.HasKEM, err = w.pop(mb, kindKEM); err != nil {
			return err
		}
		if !b.HasKEM && len(lastResort) > 0 {
			b.KEM, b.HasKEM, b.KEMLastResort = relay.Prekey{Data: lastResort}, true, true
		}
		return nil
	})
	if err != nil {
		return relay.Bundle{}, err
	}
	return b, nil
}

// Bundle implements relay.Store.
func (s *Store) Bundle(ctx context.Context, mb [16]byte) (relay.Bundle, error) {
	if err := s.begin(ctx); err != nil {
		return relay.Bundle{}, err
	}
	defer s.mu.RUnlock()
	var b relay.Bundle
	var lastResort []byte
	switch err := s.read.bundle.QueryRowContext(ctx, mb[:]).Scan(&b.Signed, &lastResort); {
	case errors.Is(err, sql.ErrNoRows):
		return relay.Bundle{}, relay.ErrNotFound
	case err != nil:
		return relay.Bundle{}, fmt.Errorf("read bundle: %w", err)
	}
	if len(b.Signed) == 0 {
		return relay.Bundle{}, relay.ErrNotFound
	}
	if len(lastResort) > 0 {
		b.KEM, b.HasKEM, b.KEMLastResort = relay.Prekey{Data: lastResort}, true, true
	}
	return b, nil
}

// Pending implements relay.Store.
func (s *Store) Pending(ctx context.Context, mb [16]byte, after uint64, limit int) ([]relay.Envelope, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.read.pending.QueryContext(ctx, mb[:], int64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("read pending envelopes: %w", damaged(err))
	}
	defer rows.Close()
	envs, err := rowscan.Envelopes(rows)
	if err != nil {
		return nil, damaged(err)
	}
	return envs, nil
}

// Usage implements relay.Store.
func (s *Store) Usage(ctx context.Context, mb [16]byte) (relay.Usage, error) {
	if err := s.begin(ctx); err != nil {
		return relay.Usage{}, err
	}
	defer s.mu.RUnlock()
	var u relay.Usage
	switch err := s.read.usage.QueryRowContext(ctx, mb[:]).Scan(&u.Count, &u.Bytes); {
	case errors.Is(err, sql.ErrNoRows):
		return relay.Usage{}, nil
	case err != nil:
		return relay.Usage{}, fmt.Errorf("read mailbox usage: %w", err)
	}
	return u, nil
}

// HasToken implements relay.Store. Hashes found are cached: every Send
// checks one, and only this Store writes them, so the cache is exact.
func (s *Store) HasToken(ctx context.Context, mb [16]byte, hash [32]byte) (bool, error) {
	if err := s.begin(ctx); err != nil {
		return false, err
	}
	defer s.mu.RUnlock()
	if s.tokens.Has(mb, hash) {
		return true, nil
	}
	gen := s.tokens.Generation()
	var one int
	switch err := s.read.token.QueryRowContext(ctx, mb[:], hash[:]).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read token: %w", err)
	}
	s.tokens.Fill(mb, hash, gen)
	return true, nil
}

// PrekeyCounts implements relay.Store.
func (s *Store) PrekeyCounts(ctx context.Context, mb [16]byte) (oneTime, kem int, err error) {
	if err := s.begin(ctx); err != nil {
		return 0, 0, err
	}
	defer s.mu.RUnlock()
	rows, err := s.read.prekeyCounts.QueryContext(ctx, mb[:])
	if err != nil {
		return 0, 0, fmt.Errorf("count prekeys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var kind, n int
		if err := rows.Scan(&kind, &n); err != nil {
			return 0, 0, fmt.Errorf("count prekeys: %w", err)
		}
		switch kind {
		case kindOneTime:
			oneTime = n
		case kindKEM:
			kem = n
		}
	}
	if err := rows.Err(); err != nil {
		return 0, 0, fmt.Errorf("count prekeys: %w", err)
	}
	return oneTime, kem, nil
}

// DiskUsage implements relay.Sizer: the pages in use (not the free ones
// inside the file, which SQLite reuses) plus the write-ahead log, and the
// free space of the file system that holds the database.
func (s *Store) DiskUsage(ctx context.Context) (relay.DiskUsage, error) {
	if err := s.begin(ctx); err != nil {
		return relay.DiskUsage{}, err
	}
	defer s.mu.RUnlock()
	var pages, free, size int64
	for _, q := range []struct {
		st *sql.Stmt
		v  *int64
	}{{s.read.pageCount, &pages}, {s.read.freePages, &free}, {s.read.pageSize, &size}} {
		if err := q.st.QueryRowContext(ctx).Scan(q.v); err != nil {
			return relay.DiskUsage{}, fmt.Errorf("read database size: %w", err)
		}
	}
	u := relay.DiskUsage{Used: (pages - free) * size}
	if fi, err := os.Stat(s.path + "-wal"); err == nil {
		u.Used += fi.Size()
	}
	var err error
	if u.Free, err = freeBytes(filepath.Dir(s.path)); err != nil {
		return relay.DiskUsage{}, fmt.Errorf("read free disk space: %w", err)
	}
	return u, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// readStmts are the statements of the read-only pool.
type readStmts struct {
	pending, usage, token, bundle, prekeyCounts, pageCount, freePages, pageSize *sql.Stmt
}

func (r *readStmts) prepare(ctx context.Context, db *sql.DB) error {
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&r.pending, `SELECT seq, id, received, data FROM envelopes
			WHERE mailbox = ? AND seq > ? ORDER BY seq LIMIT ?`},
		{&r.usage, `SELECT count, bytes FROM mailboxes WHERE id = ?`},
		{&r.token, `SELECT 1 FROM tokens WHERE mailbox = ? AND hash = ?`},
		{&r.bundle, `SELECT signed, last_resort FROM mailboxes WHERE id = ?`},
		{&r.pageCount, `PRAGMA page_count`},
		{&r.freePages, `PRAGMA freelist_count`},
		{&r.pageSize, `PRAGMA page_size`},
		{&r.prekeyCounts, `SELECT kind, count(*) FROM prekeys WHERE mailbox = ? GROUP BY kind`},
	} {
		st, err := db.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", strings.Join(strings.Fields(p.sql)[:2], " "), err)
		}
		*p.stmt = st
	}
	return nil
}

func (r *readStmts) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{r.pending, r.usage, r.token, r.bundle, r.prekeyCounts, r.pageCount, r.freePages, r.pageSize} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}
