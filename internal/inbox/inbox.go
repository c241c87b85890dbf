// Package inbox receives the user's mailbox (docs/client.md section 4.2):
// it keeps a connection to the user's relay, uploads what registration
// lacks, and stores each envelope exactly once before acknowledging it:
// open the sealed sender, find the contact (or take an introduction),
// decrypt, parse, and hand the content to the handler of its kind. Text
// and other ordered kinds keep each sender's order; receipts move
// outgoing states; the inviter's refusal and Ferry's own notices reach the
// user as notices.
//
// One handler per content kind, in a file of its own (text.go,
// receipt.go, ...), listed once in the handlers table (receive.go): a new
// kind adds a file and a line there. A kind without a handler is stored as
// unsupported, never dropped.
//
// It is not the API: package ferry turns what it stores into messages.
package inbox

import (
	"time"

	"github.com/ferry-im/ferry/internal/account"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/outbox"
	"github.com/ferry-im/ferry/internal/prekeys"
	"github.com/ferry-im/ferry/session"
)

// Defaults for a zero Options.
const (
	defaultMaxDrain    = 30 * time.Second // longest Sync without Wait
	defaultDrainStall  = 15 * time.Second // longest silence before the Subscribe's answer
	defaultOutboxRetry = 10 * time.Second // outbox retry period while Sync waits
	defaultHoldTimeout = 2 * time.Minute  // longest wait for a sender's earlier messages
	seenRetention      = 60 * 24 * time.Hour
	batchSize          = 256                    // Delivers stored per transaction
	receiptTick        = 250 * time.Millisecond // how often a waiting Sync looks for receipts due
)

// Options configure an Inbox. The zero value gives the defaults.
type Options struct {
	// Prekeys is the prekey policy.
	Prekeys prekeys.Policy
	// MaxDrain bounds a Sync without Wait; DrainStall bounds the silence
	// before the relay's answer to Subscribe. Defaults 30 s and 15 s.
	MaxDrain, DrainStall time.Duration
	// OutboxRetry is how often a waiting Sync retries the outbox. Default
	// 10 s.
	OutboxRetry time.Duration
	// HoldTimeout bounds how long a message waits for the sender's earlier
	// ones before it is shown anyway (they may never come). Default 2
	// minutes, by the account's clock.
	HoldTimeout time.Duration
	// Open opens sealed-sender envelopes. If nil, session.Open.
	Open func(*session.Identity, []byte) (session.PublicIdentity, byte, []byte, error)
}

func orDefault(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

// Events are told what a Sync stored, from Sync's goroutine, after the
// transaction committed. Any may be nil.
type Events struct {
	// Messages gets new incoming messages and notices that are now shown.
	Messages func([]Stored)
	// Contacts gets new contacts and contacts whose status changed.
	Contacts func([]*localstore.Contact)
	// States is called when outgoing messages changed state.
	States func()
	// Online is called when the connection to the user's relay comes up
	// (true) or goes down (false).
	Online func(bool)
	// Transfer is told how far an upload or a download is (bytes of the
	// blob), from the goroutine doing it.
	Transfer func(id [16]byte, outgoing bool, done, total int64)

	// kickUploads has the Sync's uploader look for work (nil: a drain,
	// which uploads in line).
	kickUploads func()
	// Changed gets the conversations whose messages changed other than by
	// new ones: reactions, edits, deletes, a timer, messages that
	// disappeared.
	Changed func(conversations []int64)
	// Typing gets typing indicators, unless the user turned them off.
	Typing func([]Typing)
	// Status gets the connection's status when it changes.
	Status func(Status)
}

// Stored is a message the inbox stored, with the names that go with it,
// so that telling of it needs no second look at the store.
type Stored struct {
	*localstore.Message
	// From is the sender's name ("" for a notice); Conversation is the
	// conversation's (a direct conversation's is its contact's name).
	From, Conversation string
}

// Inbox receives one profile's mailbox.
type Inbox struct {
	a    *account.Account
	ob   *outbox.Outbox
	opts Options
}

// Prekeys returns the inbox's prekey policy.
func (in *Inbox) Prekeys() prekeys.Policy { return in.opts.Prekeys }

// New returns the inbox of a, which flushes ob when it has queued
// something (receipts).
func New(a *account.Account, ob *outbox.Outbox, opts Options) *Inbox {
	if opts.Open == nil {
		opts.Open = session.Open
	}
	return &Inbox{a: a, ob: ob, opts: opts}
}
