// Package memstore is an in-memory relay.Store: the fake that relay's own
// tests run on, and the reference the conformance suite (relay/storetest)
// is written against.
//
// It is not durable: everything is lost when the process exits. It keeps
// all state in maps behind one mutex, which makes it simple rather than
// fast under contention.
package memstore

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/ferry-im/ferry/relay"
)

var (
	_ relay.Store         = (*Store)(nil)
	_ relay.AsyncPutter   = (*Store)(nil)
	_ relay.ArrivalLister = (*Store)(nil)
)

// Store is an in-memory relay.Store. Its zero value is not usable; call New.
type Store struct {
	// Now is the store's own clock: a mailbox counts as active on the day
	// it is created (relay.Store.Touch). If nil, time.Now is used. Set it
	// before the first call.
	Now func() time.Time

	// mu protects closed and mailboxes.
	mu        sync.Mutex
	closed    bool
	mailboxes map[[16]byte]*mailbox
}

type mailbox struct {
	tokens     map[[32]byte]struct{}
	seen       int64 // UTC day of the last activity (Unix days)
	nextSeq    uint64
	count      int
	bytes      int64
	pending    []relay.Envelope // increasing Seq
	ids        map[[16]byte]idEntry
	signed     []byte
	oneTime    map[uint32][]byte
	kem        map[uint32][]byte
	lastResort []byte
}

// idEntry remembers a stored id for de-duplication, pending or acknowledged.
type idEntry struct {
	seq      uint64 // 0 once acknowledged: nothing but the id and day is kept
	received time.Time
}

// unixDay is the UTC day of t, in days since 1970-01-01.
func unixDay(t time.Time) int64 { return t.Unix() / 86400 }

// dayStart is the first instant of day d.
func dayStart(d int64) time.Time { return time.Unix(d*86400, 0) }

// New returns an empty store.
func New() *Store {
	return &Store{mailboxes: make(map[[16]byte]*mailbox)}
}

func (s *Store) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// lock takes mu and fails once the store is closed.
func (s *Store) lock(ctx context.Context) error {
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

// mailbox returns mb's state, creating it when create is set; mu held.
func (s *Store) mailbox(mb [16]byte, create bool) *mailbox {
	m := s.mailboxes[mb]
	if m == nil && create {
		m = &mailbox{
			tokens:  make(map[[32]byte]struct{}),
			seen:    unixDay(s.now()),
			nextSeq: 1,
			ids:     make(map[[16]byte]idEntry),
			oneTime: make(map[uint32][]byte),
			kem:     make(map[uint32][]byte),
		}
		s.mailboxes[mb] = m
	}
	return m
}

// Put implements relay.Store.
func (s *Store) Put(ctx context.Context, mb [16]byte, env relay.Envelope, q relay.Quota) (uint64, bool, error) {
	if err := s.lock(ctx); err != nil {
		return 0, false, err
	}
	defer s.mu.Unlock()
	m := s.mailbox(mb, false)
	if m == nil {
		return 0, false, relay.ErrNotFound
	}
	if e, ok := m.ids[env.ID]; ok {
		return e.seq, true, nil
	}
	size := int64(len(env.Data))
	if q.MaxCount > 0 && m.count+1 > q.MaxCount || q.MaxBytes > 0 && m.bytes+size > q.MaxBytes {
		return 0, false, relay.ErrQuota
	}
	seq := m.nextSeq
	m.nextSeq++
	received := time.UnixMilli(env.Received.UnixMilli())
	m.pending = append(m.pending, relay.Envelope{Seq: seq, ID: env.ID, Received: received, Data: slices.Clone(env.Data)})
	m.ids[env.ID] = idEntry{seq: seq, received: received}
	m.count++
	m.bytes += size
	return seq, false, nil
}

// PutAsync implements relay.AsyncPutter: the Put happens at once, and the
// returned function reports it.
func (s *Store) PutAsync(ctx context.Context, mb [16]byte, env relay.Envelope, q relay.Quota) func() (uint64, bool, error) {
	seq, dup, err := s.Put(ctx, mb, env, q)
	return func() (uint64, bool, error) { return seq, dup, err }
}

// Pending implements relay.Store.
func (s *Store) Pending(ctx context.Context, mb [16]byte, after uint64, limit int) ([]relay.Envelope, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	m := s.mailbox(mb, false)
	if m == nil || limit <= 0 {
		return nil, nil
	}
	i, _ := slices.BinarySearchFunc(m.pending, after+1, func(e relay.Envelope, seq uint64) int {
		switch {
		case e.Seq < seq:
			return -1
		case e.Seq > seq:
			return 1
		}
		return 0
	})
	var out []relay.Envelope
	for _, e := range m.pending[i:] {
		if len(out) == limit {
			break
		}
		e.Data = slices.Clone(e.Data)
		out = append(out, e)
	}
	return out, nil
}

// Ack implements relay.Store.
func (s *Store) Ack(ctx context.Context, mb [16]byte, seqs []uint64) (int, error) {
	if err := s.lock(ctx); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	m := s.mailbox(mb, false)
	if m == nil || len(seqs) == 0 {
		return 0, nil
	}
	drop := make(map[uint64]bool, len(seqs))
	for _, seq := range seqs {
		drop[seq] = true
	}
	n := 0
	m.pending = slices.DeleteFunc(m.pending, func(e relay.Envelope) bool {
		if !drop[e.Seq] {
			return false
		}
		n++
		m.count--
		m.bytes -= int64(len(e.Data))
		// Keep only what de-duplication needs: the id and the day.
		m.ids[e.ID] = idEntry{received: dayStart(unixDay(e.Received))}
		return true
	})
	return n, nil
}

// Expire implements relay.Store.
func (s *Store) Expire(ctx context.Context, cutoff time.Time) (int, error) {
	if err := s.lock(ctx); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	cut := cutoff.UnixMilli()
	n := 0
	for _, m := range s.mailboxes {
		m.pending = slices.DeleteFunc(m.pending, func(e relay.Envelope) bool {
			if e.Received.UnixMilli() >= cut {
				return false
			}
			n++
			m.count--
			m.bytes -= int64(len(e.Data))
			return true
		})
		for id, e := range m.ids {
			if e.seq == 0 && unixDay(e.received) < unixDay(cutoff) || e.seq != 0 && e.received.UnixMilli() < cut {
				delete(m.ids, id)
			}
		}
	}
	return n, nil
}

// Arrivals implements relay.ArrivalLister, so that relays in one process
// can share a memstore as a cluster's store in tests.
func (s *Store) Arrivals(ctx context.Context, since time.Time, limit int) ([]relay.Arrival, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var out []relay.Arrival
	for mb, m := range s.mailboxes {
		if len(out) == limit {
			break
		}
		for _, e := range slices.Backward(m.pending) {
			if !e.Received.Before(since) {
				out = append(out, relay.Arrival{Mailbox: mb, Seq: m.pending[len(m.pending)-1].Seq})
				break
			}
		}
	}
	return out, nil
}

// Usage implements relay.Store.
func (s *Store) Usage(ctx context.Context, mb [16]byte) (relay.Usage, error) {
	if err := s.lock(ctx); err != nil {
		return relay.Usage{}, err
	}
	defer s.mu.Unlock()
	m := s.mailbox(mb, false)
	if m == nil {
		return relay.Usage{}, nil
	}
	return relay.Usage{Count: m.count, Bytes: m.bytes}, nil
}

// SetToken implements relay.Store.
func (s *Store) SetToken(ctx context.Context, mb [16]byte, hash [32]byte) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	m := s.mailbox(mb, true)
	clear(m.tokens)
	m.tokens[hash] = struct{}{}
	return nil
}

// AddToken implements relay.Store.
func (s *Store) AddToken(ctx context.Context, mb [16]byte, hash [32]byte, max int) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	m := s.mailbox(mb, false)
	if m != nil {
		if _, ok := m.tokens[hash]; ok {
			return nil
		}
	}
	if max > 0 && m != nil && len(m.tokens) >= max {
		return relay.ErrQuota
	}
	m = s.mailbox(mb, true)
	m.tokens[hash] = struct{}{}
	return nil
}

// RemoveToken implements relay.Store.
func (s *Store) RemoveToken(ctx context.Context, mb [16]byte, hash [32]byte) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if m := s.mailbox(mb, false); m != nil {
		delete(m.tokens, hash)
	}
	return nil
}

// HasToken implements relay.Store.
func (s *Store) HasToken(ctx context.Context, mb [16]byte, hash [32]byte) (bool, error) {
	if err := s.lock(ctx); err != nil {
		return false, err
	}
	defer s.mu.Unlock()
	m := s.mailbox(mb, false)
	if m == nil {
		return false, nil
	}
	_, ok := m.tokens[hash]
	return ok, nil
}

// Touch implements relay.Store.
func (s *Store) Touch(ctx context.Context, mb [16]byte, t time.Time) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if m := s.mailbox(mb, false); m != nil {
		m.seen = max(m.seen, unixDay(t))
	}
	return nil
}

// DeleteIdle implements relay.Store.
func (s *Store) DeleteIdle(ctx context.Context, cutoff time.Time) (int, error) {
	if err := s.lock(ctx); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	n := 0
	for mb, m := range s.mailboxes {
		if m.seen < unixDay(cutoff) {
			delete(s.mailboxes, mb)
			n++
		}
	}
	return n, nil
}

// PutPrekeys implements relay.Store.
func (s *Store) PutPrekeys(ctx context.Context, mb [16]byte, up relay.PrekeyUpload, max int) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	m := s.mailbox(mb, true)
	if max > 0 && (countAfter(m.oneTime, up.OneTime) > max || countAfter(m.kem, up.KEM) > max) {
		return relay.ErrQuota
	}
	if len(up.Signed) > 0 {
		m.signed = slices.Clone(up.Signed)
	}
	if len(up.LastResort) > 0 {
		m.lastResort = slices.Clone(up.LastResort)
	}
	for _, p := range up.OneTime {
		m.oneTime[p.ID] = slices.Clone(p.Data)
	}
	for _, p := range up.KEM {
		m.kem[p.ID] = slices.Clone(p.Data)
	}
	return nil
}

// countAfter is the size of pool once add has been merged into it.
func countAfter(pool map[uint32][]byte, add []relay.Prekey) int {
	n := len(pool)
	seen := make(map[uint32]bool, len(add))
	for _, p := range add {
		if _, ok := pool[p.ID]; !ok && !seen[p.ID] {
			n++
		}
		seen[p.ID] = true
	}
	return n
}

// PopBundle implements relay.Store.
func (s *Store) PopBundle(ctx context.Context, mb [16]byte) (relay.Bundle, error) {
	return s.bundle(ctx, mb, true)
}

// Bundle implements relay.Store.
func (s *Store) Bundle(ctx context.Context, mb [16]byte) (relay.Bundle, error) {
	return s.bundle(ctx, mb, false)
}

// bundle returns mb's bundle, with (and removing) the lowest one-time
// prekeys if pop is set.
func (s *Store) bundle(ctx context.Context, mb [16]byte, pop bool) (relay.Bundle, error) {
	if err := s.lock(ctx); err != nil {
		return relay.Bundle{}, err
	}
	defer s.mu.Unlock()
	m := s.mailbox(mb, false)
	if m == nil || len(m.signed) == 0 {
		return relay.Bundle{}, relay.ErrNotFound
	}
	b := relay.Bundle{Signed: slices.Clone(m.signed)}
	if id, ok := lowest(m.oneTime); ok && pop {
		b.OneTime, b.HasOneTime = relay.Prekey{ID: id, Data: m.oneTime[id]}, true
		delete(m.oneTime, id)
	}
	if id, ok := lowest(m.kem); ok && pop {
		b.KEM, b.HasKEM = relay.Prekey{ID: id, Data: m.kem[id]}, true
		delete(m.kem, id)
	} else if len(m.lastResort) > 0 {
		b.KEM, b.HasKEM, b.KEMLastResort = relay.Prekey{Data: slices.Clone(m.lastResort)}, true, true
	}
	return b, nil
}

// lowest returns the smallest id in pool: prekeys are handed out in id order.
func lowest(pool map[uint32][]byte) (uint32, bool) {
	var min uint32
	found := false
	for id := range pool {
		if !found || id < min {
			min, found = id, true
		}
	}
	return min, found
}

// PrekeyCounts implements relay.Store.
func (s *Store) PrekeyCounts(ctx context.Context, mb [16]byte) (int, int, error) {
	if err := s.lock(ctx); err != nil {
		return 0, 0, err
	}
	defer s.mu.Unlock()
	m := s.mailbox(mb, false)
	if m == nil {
		return 0, 0, nil
	}
	return len(m.oneTime), len(m.kem), nil
}

// Close implements relay.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
