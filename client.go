package ferry

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/session"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/https"
	"github.com/ferry-im/ferry/transport/obfs"
	"github.com/ferry-im/ferry/transport/tcp"
	"github.com/ferry-im/ferry/wire"
)

// Config configures a Client. Only Home is required; the zero value of
// every other field works.
type Config struct {
	// Home is the profile directory (created by Init with mode 0700).
	Home string
	// Passphrase, if non-nil, protects the profile key with Argon2id
	// (Init) or unlocks it (Open). If nil, the key is kept in a 0600 file
	// in Home. docs/client.md explains the trade-off.
	Passphrase []byte
	// Rand is the source of every key, nonce and message id. If nil,
	// crypto/rand is used.
	Rand io.Reader
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
	// Logger receives operational events; never keys, tokens or message
	// text. If nil, nothing is logged.
	Logger *slog.Logger
	// Transports maps the transport names of link endpoints ("tcp") to the
	// dialers that reach them; endpoints of other transports are skipped.
	// If nil, a registry holding transport/tcp with its defaults is used.
	Transports *transport.Registry

	// dial replaces dialChannel in tests.
	dial dialFunc
	// prekeys and minPrekeys replace initialPrekeys and minPrekeys in tests.
	prekeys, minPrekeys int
	// outboxRetry replaces outboxRetry in tests.
	outboxRetry time.Duration
	// maxDrain and drainStall replace maxDrain and responseTimeout as the
	// limits of a drain in tests.
	maxDrain, drainStall time.Duration
	// open replaces session.Open in tests.
	open func(*session.Identity, []byte) (session.PublicIdentity, byte, []byte, error)
}

// Errors callers branch on.
var (
	// ErrNoProfile means Home holds no profile (run Init).
	ErrNoProfile = localstore.ErrNoProfile
	// ErrExists means Init found a profile already in Home.
	ErrExists = localstore.ErrExists
	// ErrWrongPassphrase means the passphrase does not unlock the profile.
	ErrWrongPassphrase = localstore.ErrWrongPassphrase
	// ErrUnreachable means a relay could not be reached.
	ErrUnreachable = errors.New("the relay could not be reached")
	// ErrQueued means a message was stored in the outbox but its relay
	// could not be reached; a later Send or Sync delivers it.
	ErrQueued = errors.New("the relay could not be reached; the message stays in the outbox and will be sent by the next command that connects")
	// ErrUnknownContact means no contact has the given name.
	ErrUnknownContact = errors.New("no contact with that name")
)

// Tunables.
const (
	initialPrekeys  = 32 // one-time prekeys of each kind made by Init
	minPrekeys      = 8  // replenish below this many
	dialTimeout     = 5 * time.Second
	responseTimeout = 15 * time.Second
	sendWindow      = 256              // Send frames in flight per relay connection
	batchSize       = 256              // Deliver frames stored per transaction
	maxDrain        = 30 * time.Second // longest Sync without Wait (the relay's backlog, then its OK)
	outboxRetry     = 10 * time.Second // outbox retry period while Sync waits
	pingInterval    = 25 * time.Second
	seenRetention   = 60 * 24 * time.Hour // twice the relay's TTL
)

// contentTypeV1 is the sealed-sender content type of Ferry's messages:
// the inner bytes are a session message (initial or ratchet) whose
// plaintext is a content (content.go).
const contentTypeV1 = 0x01

// ratchetAD is the associated data every ratchet message authenticates.
var ratchetAD = []byte("ferry content v1")

// Client is a user's messaging client over one profile. Its methods are
// safe for concurrent use; several processes may also use one profile at
// once (the store serialises their transactions).
type Client struct {
	cfg   Config
	store *localstore.Store
	log   *slog.Logger
	rand  io.Reader
	now   func() time.Time
	dial  dialFunc

	// Immutable after open: the profile's keys.
	identity *session.Identity
	device   channel.KeyPair
	relay    link.Relay
	mailbox  [16]byte
	token    [32]byte
	name     string

	// flushMu serialises outbox flushes, so envelopes reach each relay in
	// the order they were queued, and protects anon.
	flushMu sync.Mutex
	anon    map[string]*anon // cached anonymous connections by relay and mailbox

	closeOnce sync.Once
	closeErr  error
}

func (cfg *Config) fill() {
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Transports == nil {
		cfg.Transports = new(transport.Registry)
		if err := errors.Join(tcp.Register(cfg.Transports, tcp.Config{}), obfs.Register(cfg.Transports, obfs.Config{}), https.Register(cfg.Transports, https.Config{})); err != nil {
			panic(err) // an empty registry always takes tcp, obfs and https
		}
	}
	if cfg.prekeys == 0 {
		cfg.prekeys = initialPrekeys
	}
	if cfg.minPrekeys == 0 {
		cfg.minPrekeys = minPrekeys
	}
	if cfg.outboxRetry == 0 {
		cfg.outboxRetry = outboxRetry
	}
	if cfg.maxDrain == 0 {
		cfg.maxDrain = maxDrain
	}
	if cfg.open == nil {
		cfg.open = session.Open
	}
	if cfg.drainStall == 0 {
		cfg.drainStall = responseTimeout
	}
}

func newClient(cfg Config, st *localstore.Store) *Client {
	c := &Client{cfg: cfg, store: st, log: cfg.Logger, rand: cfg.Rand, now: cfg.Now}
	c.dial = c.dialChannel
	if cfg.dial != nil {
		c.dial = cfg.dial
	}
	return c
}

// Init creates a profile in cfg.Home: a new identity, device key, delivery
// token and prekeys, with relayLink as the user's relay and name as the
// name contacts see. It then registers with the relay (delivery token and
// prekeys). If the relay cannot be reached the profile is kept, Init
// returns the open Client together with an error wrapping ErrUnreachable,
// and the next connection registers.
func Init(ctx context.Context, cfg Config, relayLink, name string) (*Client, error) {
	cfg.fill()
	relay, err := link.ParseRelay(relayLink)
	if err != nil {
		return nil, err
	}
	if err := link.CheckName(name); err != nil {
		return nil, err
	}
	if localstore.Exists(cfg.Home) {
		return nil, ErrExists
	}
	id, err := session.NewIdentity(cfg.Rand)
	if err != nil {
		return nil, err
	}
	device, err := channel.GenerateKeyPair(cfg.Rand)
	if err != nil {
		return nil, err
	}
	ps, err := session.GeneratePrekeys(cfg.Rand, id, cfg.prekeys)
	if err != nil {
		return nil, err
	}
	prof := &localstore.Profile{Name: name, RelayLink: relay.String(), Device: device.Private[:], Token: make([]byte, 32)}
	if _, err := io.ReadFull(cfg.Rand, prof.Token); err != nil {
		return nil, err
	}
	if prof.Identity, err = id.MarshalBinary(); err != nil {
		return nil, err
	}
	if prof.Prekeys, err = ps.MarshalBinary(); err != nil {
		return nil, err
	}
	st, err := localstore.Create(ctx, cfg.Home, localstore.Options{Passphrase: cfg.Passphrase, Rand: cfg.Rand})
	if err != nil {
		return nil, err
	}
	if err := st.Update(ctx, func(tx *localstore.Tx) error { return tx.PutProfile(prof) }); err != nil {
		st.Close()
		return nil, err
	}
	c := newClient(cfg, st)
	if err := c.load(prof); err != nil {
		st.Close()
		return nil, err
	}
	if err := c.register(ctx); err != nil {
		return c, err
	}
	return c, nil
}

// Open opens the profile in cfg.Home.
func Open(ctx context.Context, cfg Config) (*Client, error) {
	cfg.fill()
	st, err := localstore.Open(ctx, cfg.Home, localstore.Options{Passphrase: cfg.Passphrase, Rand: cfg.Rand})
	if err != nil {
		return nil, err
	}
	var prof *localstore.Profile
	err = st.Update(ctx, func(tx *localstore.Tx) (err error) {
		prof, err = tx.Profile()
		return err
	})
	if errors.Is(err, localstore.ErrNotFound) {
		err = ErrNoProfile
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	c := newClient(cfg, st)
	if err := c.load(prof); err != nil {
		st.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) load(p *localstore.Profile) error {
	c.identity = new(session.Identity)
	if err := c.identity.UnmarshalBinary(p.Identity); err != nil {
		return fmt.Errorf("load identity: %w", err)
	}
	if len(p.Device) != 32 || len(p.Token) != 32 {
		return fmt.Errorf("load profile: %w", localstore.ErrCorrupt)
	}
	dev, err := channel.NewKeyPair([32]byte(p.Device))
	if err != nil {
		return fmt.Errorf("load device key: %w", err)
	}
	c.device = dev
	c.mailbox = wire.MailboxID(dev.Public)
	c.token = [32]byte(p.Token)
	c.name = p.Name
	if c.relay, err = link.ParseRelay(p.RelayLink); err != nil {
		return fmt.Errorf("load relay link: %w", err)
	}
	return nil
}

// Close closes the profile. It is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.flushMu.Lock()
		for key := range c.anon {
			c.dropAnon(key)
		}
		c.flushMu.Unlock()
		c.closeErr = c.store.Close()
	})
	return c.closeErr
}

// Name returns the user's own name.
func (c *Client) Name() string { return c.name }

// Identity returns the user's public identity key.
func (c *Client) Identity() session.PublicIdentity { return c.identity.Public() }

// RelayLink returns the link of the user's relay.
func (c *Client) RelayLink() string { return c.relay.String() }

func (c *Client) newID() ([16]byte, error) {
	var id [16]byte
	_, err := io.ReadFull(c.rand, id[:])
	return id, err
}
