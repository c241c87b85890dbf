package relay

import (
	"context"
	"errors"
	"time"
)

// Errors a Store returns and callers branch on.
var (
	// ErrNotFound means the mailbox, token or prekey record asked for does
	// not exist.
	ErrNotFound = errors.New("relay: not found")
	// ErrQuota means a write would take a mailbox past its Quota or its
	// prekey limit. Nothing was written.
	ErrQuota = errors.New("relay: quota exceeded")
	// ErrClosed means the Store (or Server) has been closed.
	ErrClosed = errors.New("relay: closed")
)

// Envelope is one stored message: opaque bytes addressed to a mailbox.
type Envelope struct {
	// Seq is assigned by the store: it increases strictly within a mailbox
	// in the order envelopes are committed, starting at 1, and is never
	// reused for another envelope of that mailbox.
	Seq uint64
	// ID is the sender-chosen message id; (mailbox, ID) is unique.
	ID [16]byte
	// Received is when the relay accepted the envelope. The relay passes
	// it rounded down to the minute (docs/protocol.md 6.10) and stores
	// keep it to the millisecond at least. The TTL runs from it.
	Received time.Time
	// Data is the sealed envelope, never interpreted by the relay.
	Data []byte
}

// Quota bounds what one mailbox may hold in pending (unacknowledged)
// envelopes. A zero field means no limit.
type Quota struct {
	MaxCount int
	MaxBytes int64
}

// Usage is what a mailbox holds in pending envelopes.
type Usage struct {
	Count int
	Bytes int64
}

// Prekey is one opaque one-time prekey blob with its owner-chosen id.
type Prekey struct {
	ID   uint32
	Data []byte
}

// PrekeyUpload is what a device adds to its prekey directory entry.
type PrekeyUpload struct {
	// Signed replaces the signed prekey record when non-empty.
	Signed []byte
	// OneTime and KEM are added to the one-time X25519 and ML-KEM prekey
	// pools; an entry whose ID is already in its pool replaces it.
	OneTime []Prekey
	KEM     []Prekey
	// LastResort replaces the last-resort KEM prekey when non-empty.
	LastResort []byte
}

// Bundle is what a prekey fetch hands out: the signed record, at most one
// one-time prekey (removed from the pool) and one KEM prekey, one-time
// (removed from the pool) or else the last-resort one (kept).
type Bundle struct {
	Signed     []byte
	OneTime    Prekey
	HasOneTime bool
	// KEM is a one-time KEM prekey, or the last-resort one when
	// KEMLastResort is set (its ID is then 0), or empty when the device
	// uploaded neither.
	KEM           Prekey
	HasKEM        bool
	KEMLastResort bool
}

// Store is the relay's persistent state: mailboxes with their pending
// envelopes, delivery token hashes and prekey directory entries, keyed by
// 16-byte mailbox ids.
//
// Contracts every implementation keeps (relay/storetest checks them):
//   - All methods are safe for concurrent use.
//   - A mailbox exists once SetToken, AddToken or PutPrekeys has been
//     called for it, until DeleteIdle deletes it; Put to a mailbox that
//     does not exist fails with ErrNotFound. Reads of a missing mailbox
//     return empty results (Pending, Usage, PrekeyCounts), false (HasToken)
//     or ErrNotFound (PopBundle, Bundle).
//   - When Put, Ack, SetToken, AddToken, RemoveToken, Touch, PutPrekeys,
//     PopBundle, Expire or DeleteIdle return without error the change is
//     visible to every later call, and, for a backend that is durable,
//     survives a crash of the process (kill -9) from that moment.
//   - Times are kept coarsely where the contract says so (the last
//     activity of a mailbox to the UTC day, acknowledged ids to the day):
//     a seized store should hold no more than the relay needs.
//   - Byte slices passed in are not retained; byte slices returned are the
//     caller's to keep.
//   - After Close, every method returns ErrClosed. Close is idempotent and
//     waits for the store's goroutines; calls in flight when Close is
//     called either complete or fail with ErrClosed.
type Store interface {
	// Put stores env (its Seq is ignored) in mailbox mb, unless an envelope
	// with the same (mb, env.ID) was stored before and has not expired: then
	// nothing changes, and Put returns that envelope's seq and dup=true,
	// whether or not it has been acknowledged since (for an acknowledged
	// one the seq may be 0: its seq is not kept). A new envelope that would
	// take the mailbox past q fails with ErrQuota.
	Put(ctx context.Context, mb [16]byte, env Envelope, q Quota) (seq uint64, dup bool, err error)
	// Pending returns at most limit (limit > 0) unacknowledged envelopes of
	// mb with Seq > after, in increasing Seq order.
	Pending(ctx context.Context, mb [16]byte, after uint64, limit int) ([]Envelope, error)
	// Ack deletes the pending envelopes of mb with the given seqs and
	// returns how many it deleted; seqs that are not pending are ignored.
	// The envelopes' ids stay known to Put's de-duplication until they
	// expire; nothing else of them is kept.
	Ack(ctx context.Context, mb [16]byte, seqs []uint64) (int, error)
	// Expire deletes every envelope received before cutoff, in all
	// mailboxes, and returns how many still-pending envelopes it deleted.
	// It also forgets acknowledged ids received before cutoff; a store
	// that keeps their time to the day may forget them up to a day later,
	// never earlier.
	Expire(ctx context.Context, cutoff time.Time) (int, error)
	// Usage reports the pending envelopes of mb.
	Usage(ctx context.Context, mb [16]byte) (Usage, error)

	// SetToken replaces every delivery token hash of mb by hash, creating
	// the mailbox if needed.
	SetToken(ctx context.Context, mb [16]byte, hash [32]byte) error
	// AddToken adds hash to mb's delivery token hashes, creating the
	// mailbox if needed; adding one it has changes nothing. If mb would
	// then hold more than max hashes (max > 0) it fails with ErrQuota and
	// changes nothing.
	AddToken(ctx context.Context, mb [16]byte, hash [32]byte, max int) error
	// RemoveToken removes hash from mb's delivery token hashes; a hash it
	// does not have (or a missing mailbox) is ignored.
	RemoveToken(ctx context.Context, mb [16]byte, hash [32]byte) error
	// HasToken reports whether hash is one of mb's delivery token hashes.
	HasToken(ctx context.Context, mb [16]byte, hash [32]byte) (bool, error)

	// Touch records that mb's owner was active at t; stores keep the UTC
	// day only, and never move it back. A missing mailbox is ignored. A
	// mailbox never touched counts as active on the day the store
	// created it (by the store's own clock).
	Touch(ctx context.Context, mb [16]byte, t time.Time) error
	// DeleteIdle deletes every mailbox whose last activity is on a UTC
	// day before cutoff's, with its envelopes, acknowledged ids, token
	// hashes and prekeys, and returns how many mailboxes it deleted.
	DeleteIdle(ctx context.Context, cutoff time.Time) (int, error)

	// PutPrekeys adds up to mb's prekey directory entry, creating the
	// mailbox if needed. If either one-time pool would then hold more than
	// max prekeys (max > 0), it fails with ErrQuota and changes nothing.
	PutPrekeys(ctx context.Context, mb [16]byte, up PrekeyUpload, max int) error
	// PopBundle returns mb's bundle, removing the one-time prekeys it hands
	// out: concurrent calls never hand out the same one-time prekey. It
	// fails with ErrNotFound if mb has no signed prekey record (and then
	// removes nothing).
	PopBundle(ctx context.Context, mb [16]byte) (Bundle, error)
	// Bundle returns mb's bundle without one-time prekeys, consuming
	// nothing: the signed record and the last-resort KEM prekey
	// (HasOneTime false). It fails with ErrNotFound as PopBundle does.
	Bundle(ctx context.Context, mb [16]byte) (Bundle, error)
	// PrekeyCounts reports how many one-time and one-time KEM prekeys mb
	// has left.
	PrekeyCounts(ctx context.Context, mb [16]byte) (oneTime, kem int, err error)

	// Close releases the store. See the contracts above.
	Close() error
}

// AsyncPutter is an optional Store capability: a Put whose result is
// collected later. Puts started one after another by one goroutine take
// effect in that order (their seqs increase in start order), so the relay
// keeps many Sends of one connection in flight, group-committed together,
// without reordering them. Stores without it get one Put at a time per
// connection.
type AsyncPutter interface {
	// PutAsync starts Put(ctx, mb, env, q) and returns a function that
	// waits for its result. The caller must call that function exactly
	// once; Close waits for it. env.Data is not retained after PutAsync
	// returns.
	PutAsync(ctx context.Context, mb [16]byte, env Envelope, q Quota) (wait func() (seq uint64, dup bool, err error))
}

// PollingPutter is an optional capability beyond AsyncPutter: a PutAsync
// whose result can be checked for without waiting. The relay then answers
// all the Sends of a connection whose results are in with one write,
// without holding an answer back for a Put still in progress.
type PollingPutter interface {
	AsyncPutter
	// PutAsyncPoll is PutAsync that also returns ready, which reports,
	// without blocking, whether wait would return at once. ready may be
	// called any number of times until wait is called.
	PutAsyncPoll(ctx context.Context, mb [16]byte, env Envelope, q Quota) (wait func() (seq uint64, dup bool, err error), ready func() bool)
}

// Sizer is an optional Store capability: how much disk the store uses and
// how much is left where it keeps its data. The relay's disk budget
// (Budgets.Disk, Budgets.DiskFree) needs it; a store without it has no
// disk budget.
type Sizer interface {
	// DiskUsage reports the store's use of its disk.
	DiskUsage(ctx context.Context) (DiskUsage, error)
}

// DiskUsage is what a Sizer reports.
type DiskUsage struct {
	// Used is the bytes the store's data takes (for SQLite: the pages in
	// use plus the write-ahead log).
	Used int64
	// Free is the bytes left on the file system that holds the data, or
	// -1 if the store cannot tell.
	Free int64
}
