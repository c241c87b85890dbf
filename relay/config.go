package relay

import (
	"crypto/rand"
	"io"
	"log/slog"
	"time"

	"github.com/ferry-im/ferry/channel"
)

// Config configures a Server. Key and Store are required; every other zero
// field has the default its comment gives.
type Config struct {
	// Key is the relay's static Noise key pair, the one its link carries.
	Key channel.KeyPair
	// Store holds mailboxes and prekeys. The Server does not close it.
	Store Store
	// Logger receives structured events. It never receives keys, tokens,
	// envelope bytes or network addresses (they are removed from error
	// texts), and each message is rate-limited (logging.go). If nil,
	// nothing is logged.
	Logger *slog.Logger
	// Now is the clock for TTLs, timestamps and rate limits. If nil,
	// time.Now is used.
	Now func() time.Time
	// Rand is the randomness for handshakes. If nil, crypto/rand is used.
	Rand io.Reader
	// Limits bounds what clients may do. The zero value gives the defaults
	// documented on each field.
	Limits Limits
	// RankingPublishers are the channel static keys that may publish a
	// transport ranking (PutRanking, docs/protocol.md section 6.12): a
	// monitor's. At most 16. If empty, nobody may.
	RankingPublishers [][32]byte

	// Bus links this relay to the other relays of a cluster, which share
	// Store (see relay.Bus): envelopes stored through one are pushed by
	// the others to their subscribers. Store must then implement
	// ArrivalLister. If nil, the relay is alone: the default.
	Bus Bus
	// BusPoll is how often, while Bus is down, the Store is polled for
	// envelopes that other relays stored. If zero, one second.
	BusPoll time.Duration

	// Budgets bound what the relay holds as a whole (budget.go). The zero
	// value gives the defaults documented on each field (memory 1 GiB).
	Budgets Budgets

	// Blobs holds attachments (docs/protocol.md section 6.13). The Server
	// does not close it. If nil, the relay stores no blobs: blob frames
	// are answered Error{Unavailable}.
	Blobs BlobStore
}

// Limits are the relay's quotas and rate limits. A zero field takes its
// default; a negative one disables that limit (tests use this).
type Limits struct {
	// TTL is how long an undelivered envelope is kept. Default 30 days.
	TTL time.Duration
	// SweepInterval is how often expired envelopes are deleted. Default
	// one minute.
	SweepInterval time.Duration
	// MailboxCount and MailboxBytes bound what one mailbox may hold
	// pending. Defaults 10,000 envelopes and 256 MiB.
	MailboxCount int
	MailboxBytes int64
	// Prekeys bounds each one-time prekey pool of a mailbox. Default 2,000.
	Prekeys int
	// Tokens bounds the delivery tokens of a mailbox (AddToken). Default
	// 1,000.
	Tokens int
	// BundleRate and BundleBurst bound the one-time prekeys handed out per
	// mailbox: a GetBundle beyond them is answered with the signed and
	// last-resort prekeys only, consuming nothing, so a stranger holding
	// an old invite cannot drain the pools. Defaults 20 per hour and 20.
	BundleRate  float64
	BundleBurst int
	// MailboxIdle is how long a mailbox whose owner never connects is
	// kept; then it is deleted with everything in it (its owner's client
	// registers it again when it comes back). Default 90 days.
	MailboxIdle time.Duration
	// KeyRate and KeyBurst are the token bucket for requests (Send,
	// GetBundle, SetToken, PutPrekeys) per connection key: sustained
	// requests per second and burst. Defaults 200/s and 1,000.
	KeyRate  float64
	KeyBurst int
	// AddrRate and AddrBurst are the same per source address (an IPv4
	// address or an IPv6 /64). Defaults 2,000/s and 10,000.
	AddrRate  float64
	AddrBurst int
	// SubscribeRate and SubscribeBurst bound Subscribes per connection
	// key; one beyond them is answered Error{RateLimited}. Defaults 2/s
	// and 20 (a client subscribes once per connection).
	SubscribeRate  float64
	SubscribeBurst int
	// AckRate and AckBurst bound Acks per connection key, counted in
	// units of 64 acknowledged seqs (an Ack of 1-64 seqs costs 1, of 4096
	// costs 64); per source address the bucket is 10 times larger (and
	// apart from AddrRate's, so that acks never cost a neighbour's
	// sends). An Ack beyond them is ignored: its envelopes stay pending
	// and are delivered again. Defaults 100/s and 1,000.
	AckRate  float64
	AckBurst int
	// HandshakeRate and HandshakeBurst bound new connections per source
	// address. Defaults 200/s and 1,000 (generous: many users may share
	// one address behind a carrier-grade NAT, and all reconnect at once
	// after an outage).
	HandshakeRate  float64
	HandshakeBurst int
	// HandshakeTimeout bounds the channel handshake. Default 10 seconds.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection that has sent no frame for that
	// long, on the real clock (clients ping well within it); it is
	// checked every quarter of it, so the close comes at most a quarter
	// late. Default 5 minutes.
	IdleTimeout time.Duration
	// FrameTimeout closes a connection that has had a frame in transit
	// (received in part) for that long, on the real clock, whatever else
	// it sends meanwhile; like IdleTimeout it is checked every quarter of
	// it. Default 2 minutes (a 1 MiB frame at 70 kbit/s).
	FrameTimeout time.Duration
	// ConnsPerAddr bounds the connections open at once from one source
	// address (as for AddrRate). Default 10,000 (about 130 MiB of relay
	// memory; carrier-grade NAT puts thousands of users on one address).
	ConnsPerAddr int
	// DeliverQueue is how many envelopes are queued for push to one
	// connection before the relay stops queueing and re-reads the store
	// instead. Default 256; it cannot be disabled (at least 1).
	DeliverQueue int

	// Blob limits (docs/protocol.md section 6.13).
	// BlobMaxSize is the largest blob. Default 4 GiB.
	BlobMaxSize int64
	// BlobQuotaBytes and BlobQuotaCount bound the blobs, complete or
	// not, counted against one mailbox: the sum of their sizes and their
	// number. Defaults 8 GiB and 1,000.
	BlobQuotaBytes int64
	BlobQuotaCount int
	// BlobTTL is how long a blob is kept after its creation; BlobIdleTTL
	// how long an incomplete blob is kept after its last write. Defaults
	// 30 days and 2 days.
	BlobTTL, BlobIdleTTL time.Duration
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Config) now() func() time.Time {
	if c.Now == nil {
		return time.Now
	}
	return c.Now
}

func (c *Config) busPoll() time.Duration {
	if c.BusPoll <= 0 {
		return time.Second
	}
	return c.BusPoll
}

func (c *Config) rand() io.Reader {
	if c.Rand == nil {
		return rand.Reader
	}
	return c.Rand
}

// withDefaults returns l with defaults applied; disabled limits are 0.
func (l Limits) withDefaults() Limits {
	dur := func(v *time.Duration, def time.Duration) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = 0
		}
	}
	num := func(v *int, def int) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = 0
		}
	}
	rate := func(v *float64, def float64) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = 0
		}
	}
	dur(&l.TTL, 30*24*time.Hour)
	dur(&l.SweepInterval, time.Minute)
	num(&l.MailboxCount, 10000)
	switch {
	case l.MailboxBytes == 0:
		l.MailboxBytes = 256 << 20
	case l.MailboxBytes < 0:
		l.MailboxBytes = 0
	}
	num(&l.Prekeys, 2000)
	num(&l.Tokens, 1000)
	rate(&l.BundleRate, 20.0/3600)
	num(&l.BundleBurst, 20)
	dur(&l.MailboxIdle, 90*24*time.Hour)
	rate(&l.KeyRate, 200)
	num(&l.KeyBurst, 1000)
	rate(&l.AddrRate, 2000)
	num(&l.AddrBurst, 10000)
	rate(&l.SubscribeRate, 2)
	num(&l.SubscribeBurst, 20)
	rate(&l.AckRate, 100)
	num(&l.AckBurst, 1000)
	rate(&l.HandshakeRate, 200)
	num(&l.HandshakeBurst, 1000)
	dur(&l.HandshakeTimeout, 10*time.Second)
	dur(&l.IdleTimeout, 5*time.Minute)
	dur(&l.FrameTimeout, 2*time.Minute)
	num(&l.ConnsPerAddr, 10000)
	num(&l.DeliverQueue, 256)
	l.DeliverQueue = max(l.DeliverQueue, 1)
	l.blobDefaults(num, dur)
	return l
}

// blobDefaults applies the blob limits' defaults.
func (l *Limits) blobDefaults(num func(*int, int), dur func(*time.Duration, time.Duration)) {
	size := func(v *int64, def int64) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = 0
		}
	}
	size(&l.BlobMaxSize, 4<<30)
	size(&l.BlobQuotaBytes, 8<<30)
	num(&l.BlobQuotaCount, 1000)
	dur(&l.BlobTTL, 30*24*time.Hour)
	dur(&l.BlobIdleTTL, 2*24*time.Hour)
}
