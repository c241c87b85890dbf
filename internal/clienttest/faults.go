package clienttest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-im/ferry/relay"
)

// connKey is the context key under which the harness passes a relay
// connection's number to the store.
type connKey struct{}

// Faults is a relay.Store that passes every call to Store, except where a
// knob says otherwise, and records what each relay connection did. Its
// knobs may be set at any time.
type Faults struct {
	relay.Store

	// FailPuts makes the next FailPuts envelope writes fail, so the relay
	// answers those Sends with a temporary SendErr (unavailable).
	FailPuts atomic.Int32
	// DropAcks makes acknowledgements vanish, as if the client crashed
	// before sending them: the relay delivers the envelopes again.
	DropAcks atomic.Bool
	// PendingDelay delays every read of a mailbox's pending envelopes, as
	// a busy disk would; the relay then pushes a backlog in slow pages.
	PendingDelay atomic.Int64 // a time.Duration
	// StallAfter, if positive, makes every read of pending envelopes after
	// the first StallAfter block until the relay stops: the relay goes
	// silent in the middle of a backlog.
	StallAfter atomic.Int32

	pendingReads atomic.Int32
	mu           sync.Mutex // mu protects conns and uploads
	conns        map[int]*ConnRecord
	uploads      map[[16]byte]*relay.PrekeyUpload
}

// ConnRecord is what one relay connection did to the store.
type ConnRecord struct {
	// Owned is the mailbox the connection acted for as its owner (token,
	// prekeys, reading the mailbox), if any.
	Owned *[16]byte
	// SentTo are the mailboxes it stored envelopes in.
	SentTo map[[16]byte]bool
}

// Conns returns a copy of the record of every connection that touched the
// store.
func (f *Faults) Conns() []ConnRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []ConnRecord
	for _, r := range f.conns {
		c := ConnRecord{Owned: r.Owned, SentTo: make(map[[16]byte]bool)}
		for mb := range r.SentTo {
			c.SentTo[mb] = true
		}
		out = append(out, c)
	}
	return out
}

// record returns the record of the connection ctx belongs to, or nil.
// f.mu must be held.
func (f *Faults) record(ctx context.Context) *ConnRecord {
	id, ok := ctx.Value(connKey{}).(int)
	if !ok {
		return nil
	}
	if f.conns == nil {
		f.conns = make(map[int]*ConnRecord)
	}
	r := f.conns[id]
	if r == nil {
		r = &ConnRecord{SentTo: make(map[[16]byte]bool)}
		f.conns[id] = r
	}
	return r
}

func (f *Faults) owner(ctx context.Context, mb [16]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.record(ctx); r != nil {
		r.Owned = &mb
	}
}

// errInjected is the store failure FailPuts injects.
var errInjected = errors.New("clienttest: injected store failure")

func (f *Faults) Put(ctx context.Context, mb [16]byte, env relay.Envelope, q relay.Quota) (uint64, bool, error) {
	f.mu.Lock()
	if r := f.record(ctx); r != nil {
		r.SentTo[mb] = true
	}
	f.mu.Unlock()
	if f.takeFailure() {
		return 0, false, errInjected
	}
	return f.Store.Put(ctx, mb, env, q)
}

// takeFailure uses up one of FailPuts, if any is left.
func (f *Faults) takeFailure() bool {
	for {
		n := f.FailPuts.Load()
		if n <= 0 {
			return false
		}
		if f.FailPuts.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func (f *Faults) Pending(ctx context.Context, mb [16]byte, after uint64, limit int) ([]relay.Envelope, error) {
	f.owner(ctx, mb)
	if n := f.StallAfter.Load(); n > 0 && f.pendingReads.Add(1) > n {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if d := time.Duration(f.PendingDelay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return f.Store.Pending(ctx, mb, after, limit)
}

func (f *Faults) Ack(ctx context.Context, mb [16]byte, seqs []uint64) (int, error) {
	f.owner(ctx, mb)
	if f.DropAcks.Load() {
		return 0, nil
	}
	return f.Store.Ack(ctx, mb, seqs)
}

func (f *Faults) SetToken(ctx context.Context, mb [16]byte, hash [32]byte) error {
	f.owner(ctx, mb)
	return f.Store.SetToken(ctx, mb, hash)
}

func (f *Faults) PutPrekeys(ctx context.Context, mb [16]byte, up relay.PrekeyUpload, max int) error {
	f.owner(ctx, mb)
	err := f.Store.PutPrekeys(ctx, mb, up, max)
	if err == nil {
		f.mu.Lock()
		if f.uploads == nil {
			f.uploads = make(map[[16]byte]*relay.PrekeyUpload)
		}
		u := f.uploads[mb]
		if u == nil {
			u = new(relay.PrekeyUpload)
			f.uploads[mb] = u
		}
		if len(up.Signed) > 0 {
			u.Signed = bytes.Clone(up.Signed)
		}
		if len(up.LastResort) > 0 {
			u.LastResort = bytes.Clone(up.LastResort)
		}
		u.OneTime = append(u.OneTime, up.OneTime...)
		u.KEM = append(u.KEM, up.KEM...)
		f.mu.Unlock()
	}
	return err
}

// Uploaded returns the latest signed and last-resort prekey records mb's
// owner uploaded, and how many one-time prekeys of each kind it uploaded
// in all.
func (f *Faults) Uploaded(mb [16]byte) (signed, lastResort []byte, oneTime, kem int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u := f.uploads[mb]
	if u == nil {
		return nil, nil, 0, 0
	}
	return bytes.Clone(u.Signed), bytes.Clone(u.LastResort), len(u.OneTime), len(u.KEM)
}
