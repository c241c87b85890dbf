package ferry

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/account"
	"github.com/ferry-im/ferry/internal/inbox"
	"github.com/ferry-im/ferry/internal/invite"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/outbox"
	"github.com/ferry-im/ferry/internal/prekeys"
	"github.com/ferry-im/ferry/internal/rankcache"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/session"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/https"
	"github.com/ferry-im/ferry/transport/obfs"
	"github.com/ferry-im/ferry/transport/tcp"
)

// Config configures a Client. Only Home is required; the zero value of
// every other field works.
type Config struct {
	// Home is the profile directory (created by Init with mode 0700).
	Home string
	// Passphrase, if non-nil, protects the profile key with Argon2id
	// (Init, Restore) or unlocks it (Open). If nil, the key is kept in a
	// 0600 file in Home. docs/client.md explains the trade-off.
	Passphrase []byte
	// Rand is the source of every key, nonce and message id. If nil,
	// crypto/rand is used.
	Rand io.Reader
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
	// Logger receives operational events; never keys, tokens or message
	// text. If nil, nothing is logged.
	Logger *slog.Logger
	// Transports maps the transport names of link endpoints to the
	// dialers that reach them; endpoints of other transports are skipped.
	// If nil, DefaultTransports(NetDialer) is used.
	Transports *transport.Registry
	// TransportOrder, if not empty, restricts the client to the transports
	// named, tried in this order. Each must be in Transports, and the
	// user's own relay must offer at least one of them.
	TransportOrder []string
	// NetDialer makes the connections the default transports run over
	// (for example an upstream proxy). If nil, they dial directly. It is
	// not used when Transports is set.
	NetDialer transport.NetDialer
	// ImmediateReceipts sends delivery and read receipts as soon as the
	// messages they answer are stored, instead of in batches 1-10 s later
	// (docs/protocol.md section 6.10). The delay keeps the relay from
	// linking a sender and a recipient by time: turn it off only for
	// accounts whose privacy does not matter, such as a reachability
	// monitor's probe accounts, or in tests.
	ImmediateReceipts bool
}

// DefaultTransports returns the registry of every transport this Ferry
// has, with its defaults, making its connections with nd (nil: directly).
// Adding a transport to Ferry is one line here.
func DefaultTransports(nd transport.NetDialer) *transport.Registry {
	reg := new(transport.Registry)
	for _, err := range []error{
		tcp.Register(reg, tcp.Config{NetDialer: nd}),
		obfs.Register(reg, obfs.Config{NetDialer: nd}),
		https.Register(reg, https.Config{NetDialer: nd}),
	} {
		if err != nil {
			panic(err) // each name is registered once, with a dialer
		}
	}
	return reg
}

// Errors callers branch on.
var (
	// ErrNoProfile means Home holds no profile (run Init).
	ErrNoProfile = localstore.ErrNoProfile
	// ErrExists means Init or Restore found a profile already in Home.
	ErrExists = localstore.ErrExists
	// ErrWrongPassphrase means the passphrase does not unlock the profile
	// (or the backup).
	ErrWrongPassphrase = localstore.ErrWrongPassphrase
	// ErrUnreachable means a relay could not be reached. The error that
	// wraps it says why in one sentence (a wrong relay key, another
	// version, something on the path blocking or resetting).
	ErrUnreachable = relayclient.ErrUnreachable
	// ErrBusy (with ErrUnreachable) means the relay kept asking the
	// client to slow down (rate limited, busy) for longer than the
	// operation waits; trying again later works.
	ErrBusy = relayclient.ErrBusy
	// ErrQueued means a message was stored in the outbox but its relay
	// could not be reached; a later Send, Flush or Sync delivers it.
	ErrQueued = errors.New("the relay could not be reached; the message stays in the outbox and will be sent by the next command that connects")
	// ErrRegisterLater means Init made the profile but its relay refused
	// to register the mailbox for now (its storage nearly full, or busy);
	// the error says why, and the next command that connects registers
	// it.
	ErrRegisterLater = errors.New("profile created, but the relay refused to register it for now")
	// ErrRefused means a relay refused a message for good (the contact's
	// delivery token is no longer valid, or the message is too large):
	// the message is failed, a notice in its conversation says why, and
	// it is not sent again.
	ErrRefused = errors.New("the message failed: the recipient's relay refused it for good")
	// ErrInviteUnknown means the inviter's relay does not know the
	// invite: the inviter's Ferry has not connected since making it
	// (Accept works once it has), or the invite expired or was used.
	ErrInviteUnknown = invite.ErrStale
	// ErrUnknownContact means no contact or conversation has the given
	// name or id.
	ErrUnknownContact = errors.New("no contact with that name")
	// ErrEmpty means a message to send was empty (or only white space).
	ErrEmpty = errors.New("the message is empty")
	// ErrUnknownTransport means Config.TransportOrder names a transport
	// this Ferry does not have.
	ErrUnknownTransport = errors.New("unknown transport")
)

// DialError says why a relay could not be reached; errors wrapping
// ErrUnreachable hold one when a dial failed. Its Error is one sentence
// for the user naming the cause: a wrong relay key or another Ferry
// version, a reset or silence on the network path, nothing listening, a
// name that does not resolve, or no transport in common.
type DialError = relayclient.DialError

// Client is a user's messaging client over one profile. Its methods are
// safe for concurrent use; several processes may also use one profile at
// once (the store serialises their transactions).
type Client struct {
	cfg Config
	a   *account.Account
	ob  *outbox.Outbox
	in  *inbox.Inbox
	rw  *routeWatch

	closeOnce sync.Once
	closeErr  error
}

func (cfg *Config) fill() error {
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
		cfg.Transports = DefaultTransports(cfg.NetDialer)
	}
	for _, name := range cfg.TransportOrder {
		if _, ok := cfg.Transports.Lookup(name); !ok {
			return fmt.Errorf("%w %q: this Ferry has %s", ErrUnknownTransport, name, strings.Join(cfg.Transports.Names(), ", "))
		}
	}
	return nil
}

// checkOrder fails if the user's own relay offers none of the transports
// of TransportOrder.
func (cfg *Config) checkOrder(r link.Relay) error {
	if len(cfg.TransportOrder) == 0 {
		return nil
	}
	var have []string
	for _, e := range r.Endpoints {
		if slices.Contains(cfg.TransportOrder, e.Transport) {
			return nil
		}
		have = append(have, e.Transport)
	}
	return fmt.Errorf("your relay's link offers %s, not %s", strings.Join(have, ", "), strings.Join(cfg.TransportOrder, ", "))
}

func newClient(cfg Config, st *localstore.Store, p *localstore.Profile) (*Client, error) {
	mem := loadMemory(cfg.Home)
	a := &account.Account{
		Home: cfg.Home, Store: st, Rand: cfg.Rand, Now: cfg.Now, Log: cfg.Logger,
		Dialer: &relayclient.Dialer{Transports: cfg.Transports, Order: cfg.TransportOrder, Rand: cfg.Rand, Logger: cfg.Logger, Memory: mem},
	}
	if cfg.ImmediateReceipts {
		a.ReceiptDelay = func() time.Duration { return 0 }
	}
	if err := a.Load(p); err != nil {
		return nil, err
	}
	rw := &routeWatch{home: cfg.Home, mem: mem, relay: a.Relay.Key, log: cfg.Logger.Warn}
	a.Dialer.OnRoute(rw.changed)
	if err := cfg.checkOrder(a.Relay); err != nil {
		return nil, err
	}
	// The relay's transport rankings (docs/monitor.md section 12) order
	// its link's endpoints, unless the user chose an order.
	a.Rankings = &rankcache.Cache{RelayKey: a.Relay.Key, Path: rankcache.InProfile(cfg.Home), Now: cfg.Now, Logger: cfg.Logger}
	a.Dialer.Rank = a.Rankings.Order
	ob := outbox.New(a)
	return &Client{cfg: cfg, a: a, ob: ob, in: inbox.New(a, ob, inbox.Options{}), rw: rw}, nil
}

// Init creates a profile in cfg.Home: a new identity, device key, delivery
// token and prekeys, with relayLink as the user's relay and name as the
// name contacts see. It then registers with the relay (delivery token and
// prekeys). If the relay cannot be reached the profile is kept, Init
// returns the open Client together with an error wrapping ErrUnreachable
// (or ErrRegisterLater, if the relay refused for now), and the next
// connection registers.
func Init(ctx context.Context, cfg Config, relayLink, name string) (*Client, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	relay, err := link.ParseRelay(relayLink)
	if err != nil {
		return nil, err
	}
	if err := link.CheckName(name); err != nil {
		return nil, err
	}
	if err := cfg.checkOrder(relay); err != nil {
		return nil, err
	}
	if localstore.Exists(cfg.Home) {
		return nil, ErrExists
	}
	prof, err := newProfile(cfg, relay, name)
	if err != nil {
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
	c, err := newClient(cfg, st, prof)
	if err != nil {
		st.Close()
		return nil, err
	}
	if err := (prekeys.Policy{}).Register(ctx, c.a); err != nil {
		var re *relayclient.RefusedError
		if errors.As(err, &re) && re.Code.Temporary() {
			return c, fmt.Errorf("%w: %s", ErrRegisterLater, re.Msg)
		}
		return c, err
	}
	return c, nil
}

// newProfile makes the keys of a new profile.
func newProfile(cfg Config, relay link.Relay, name string) (*localstore.Profile, error) {
	id, err := session.NewIdentity(cfg.Rand)
	if err != nil {
		return nil, err
	}
	device, err := channel.GenerateKeyPair(cfg.Rand)
	if err != nil {
		return nil, err
	}
	ps, err := (prekeys.Policy{}).Generate(cfg.Rand, id)
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
	return prof, nil
}

// Open opens the profile in cfg.Home, moving a profile made by an older
// Ferry to the current layout first.
func Open(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	st, err := localstore.Open(ctx, cfg.Home, localstore.Options{Passphrase: cfg.Passphrase, Rand: cfg.Rand})
	if err != nil {
		return nil, err
	}
	return openStore(ctx, cfg, st)
}

func openStore(ctx context.Context, cfg Config, st *localstore.Store) (*Client, error) {
	var prof *localstore.Profile
	err := st.Update(ctx, func(tx *localstore.Tx) (err error) {
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
	c, err := newClient(cfg, st, prof)
	if err != nil {
		st.Close()
		return nil, err
	}
	return c, nil
}

// Close closes the profile. It is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.ob.Close()
		if err := saveMemory(c.a.Home, c.rw.mem); err != nil {
			c.a.Log.Warn("save transport memory", "err", err.Error())
		}
		c.closeErr = c.a.Store.Close()
	})
	return c.closeErr
}

// Name returns the user's own name.
func (c *Client) Name() string { return c.a.Name }

// Identity returns the user's public identity key.
func (c *Client) Identity() session.PublicIdentity { return c.a.Identity.Public() }

// RelayLink returns the link of the user's relay.
func (c *Client) RelayLink() string { return c.a.Relay.String() }

// ChangePassphrase protects the profile key with passphrase from now on,
// or keeps it in the clear if passphrase is nil. The profile itself does
// not change.
func (c *Client) ChangePassphrase(passphrase []byte) error {
	return c.a.Store.SetPassphrase(passphrase)
}

// Backup writes an encrypted copy of the whole profile (keys, contacts,
// sessions, history, outbox) to w, readable with passphrase by Restore on
// another machine. Use the copy instead of this profile, never both: two
// copies of one profile would reuse the same ratchet keys.
func (c *Client) Backup(ctx context.Context, w io.Writer, passphrase []byte) error {
	return c.a.Store.Backup(ctx, w, passphrase)
}

// Restore makes the profile in cfg.Home (which must hold none) from a
// backup read from r, unlocked with backupPassphrase, and protects it with
// cfg.Passphrase. Every session's sending chain then moves
// session.MaxSkip message keys ahead, so that no message key the
// original profile may have used after the backup is used again
// (docs/client.md section 1.5).
func Restore(ctx context.Context, cfg Config, r io.Reader, backupPassphrase []byte) (*Client, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	st, err := localstore.Restore(ctx, cfg.Home, r, backupPassphrase, localstore.Options{Passphrase: cfg.Passphrase, Rand: cfg.Rand})
	if err != nil {
		return nil, err
	}
	c, err := openStore(ctx, cfg, st)
	if err != nil {
		return nil, err
	}
	if err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error { return skipRestoredKeys(tx, c.a) }); err != nil {
		c.Close()
		return nil, fmt.Errorf("move the restored sessions past the backup's keys: %w", err)
	}
	return c, nil
}

// skipRestoredKeys moves every session's sending chain session.MaxSkip
// keys ahead: the original profile may have sent with the keys after the
// backup's position (up to MaxSkip messages per chain are covered; the
// receiver accepts that many skipped keys).
func skipRestoredKeys(tx *localstore.Tx, a *account.Account) error {
	ks, err := tx.AllContacts()
	if err != nil {
		return err
	}
	for _, k := range ks {
		if len(k.Session) == 0 {
			continue
		}
		s, err := a.Session(k)
		if err != nil {
			return err
		}
		if err := s.SkipSending(session.MaxSkip); err != nil {
			return fmt.Errorf("session with %s: %w", k.Name, err)
		}
		if err := saveContactSession(tx, k, s); err != nil {
			return err
		}
	}
	return nil
}
