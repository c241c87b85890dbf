// Package natsbus is relay.Bus on NATS (github.com/nats-io/nats.go): the
// relays of a cluster announce stored envelopes to each other through a
// NATS server or cluster.
//
// Each mailbox is a subject (event.go); a relay subscribes to the subjects
// of the mailboxes it has subscribers for, all into one channel, so a
// watched mailbox costs a NATS subscription but no goroutine. The
// connection never echoes a relay's own announcements back to it, and
// reconnects for ever: while it is down, and when NATS drops messages for
// a slow consumer, Listen reports the bus down, and the relay polls its
// store.
//
// It carries no secrets beyond what the relay's store holds (sealed
// envelopes, mailbox ids, sizes and times); run NATS on a private network
// or with TLS and credentials in the URL as for any NATS client.
package natsbus

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ferry-im/ferry/relay"
)

var _ relay.Bus = (*Bus)(nil)

// Options tunes a Bus. The zero value is what the relay uses.
type Options struct {
	// Prefix starts every subject. The relays of one cluster must share
	// it; clusters on one NATS server must not. If empty, "ferry".
	Prefix string
	// Name is the connection's name as NATS monitoring shows it.
	Name string
	// Logger receives connection events. If nil, nothing is logged.
	Logger *slog.Logger
	// Queue is how many announcements may wait for Listen before NATS
	// drops them (and the bus reports itself down and up). If zero, 65536.
	Queue int
}

func (o *Options) prefix() string {
	if o == nil || o.Prefix == "" {
		return "ferry"
	}
	return o.Prefix
}

func (o *Options) logger() *slog.Logger {
	if o == nil || o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

func (o *Options) queue() int {
	if o == nil || o.Queue <= 0 {
		return 65536
	}
	return o.Queue
}

// Bus is a relay's connection to the cluster's NATS.
type Bus struct {
	nc     *nats.Conn
	prefix string
	log    *slog.Logger
	msgs   chan *nats.Msg
	closed chan struct{}
	once   sync.Once

	// downs counts the times the connection went down (or dropped
	// messages); changed signals Listen that it or the connection's state
	// moved.
	downs   atomic.Uint64
	changed chan struct{}

	// mu protects subs and isClosed.
	mu       sync.Mutex
	subs     map[[16]byte]*watch
	isClosed bool
}

// Dial connects to the NATS server at url (nats://host:port, or several
// separated by commas). It returns at once even if NATS cannot be reached
// yet: the Bus keeps trying, and Listen reports when it is up.
func Dial(url string, opts *Options) (*Bus, error) {
	b := &Bus{
		prefix:  opts.prefix(),
		log:     opts.logger(),
		msgs:    make(chan *nats.Msg, opts.queue()),
		closed:  make(chan struct{}),
		changed: make(chan struct{}, 1),
		subs:    map[[16]byte]*watch{},
	}
	name := ""
	if opts != nil {
		name = opts.Name
	}
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.NoEcho(),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ConnectHandler(func(*nats.Conn) { b.log.Info("nats connected"); b.notify() }),
		nats.ReconnectHandler(func(*nats.Conn) { b.log.Info("nats reconnected"); b.notify() }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			b.log.Warn("nats disconnected", "err", err)
			b.down()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			b.log.Warn("nats error", "err", err)
			b.down() // a slow consumer lost messages
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	b.nc = nc
	return b, nil
}

func (b *Bus) notify() {
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

func (b *Bus) down() {
	b.downs.Add(1)
	b.notify()
}

// Publish implements relay.Bus.
func (b *Bus) Publish(ctx context.Context, mb [16]byte, env relay.Envelope) error {
	if b.isDone() {
		return relay.ErrClosed
	}
	payload := appendEvent(make([]byte, 0, eventHeader+len(env.Data)), env)
	if err := b.nc.Publish(subject(b.prefix, mb), payload); err != nil {
		return fmt.Errorf("publish to nats: %w", err)
	}
	return nil
}

// watch is a watched mailbox's subscription and its count of Watches.
type watch struct {
	sub *nats.Subscription
	n   int
}

// flushWait bounds how long Watch waits for NATS to confirm a
// subscription; while NATS is down the relay polls anyway.
const flushWait = 2 * time.Second

// Watch implements relay.Bus. It returns once the NATS server has the
// subscription (a round trip), so that every announcement published after
// it reaches Listen.
func (b *Bus) Watch(mb [16]byte) error {
	b.mu.Lock()
	if b.isClosed {
		b.mu.Unlock()
		return relay.ErrClosed
	}
	w := b.subs[mb]
	if w == nil {
		sub, err := b.nc.ChanSubscribe(subject(b.prefix, mb), b.msgs)
		if err != nil {
			b.mu.Unlock()
			return fmt.Errorf("subscribe on nats: %w", err)
		}
		w = &watch{sub: sub}
		b.subs[mb] = w
	}
	w.n++
	b.mu.Unlock()
	if b.nc.IsConnected() {
		if err := b.nc.FlushTimeout(flushWait); err != nil {
			return fmt.Errorf("subscribe on nats: %w", err)
		}
	}
	return nil
}

// Unwatch implements relay.Bus.
func (b *Bus) Unwatch(mb [16]byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed {
		return relay.ErrClosed
	}
	w := b.subs[mb]
	if w == nil {
		return nil
	}
	if w.n--; w.n > 0 {
		return nil
	}
	delete(b.subs, mb)
	if err := w.sub.Unsubscribe(); err != nil {
		return fmt.Errorf("unsubscribe on nats: %w", err)
	}
	return nil
}

// Listen implements relay.Bus.
func (b *Bus) Listen(ctx context.Context, deliver func(mb [16]byte, env relay.Envelope), state func(up bool)) error {
	seen := b.downs.Load()
	up := b.nc.IsConnected()
	state(up)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.closed:
			return relay.ErrClosed
		case <-b.changed:
			if d := b.downs.Load(); d != seen {
				seen = d
				if up {
					state(false)
				}
				up = false
			}
			if now := b.nc.IsConnected(); now != up {
				up = now
				state(up)
			}
		case m := <-b.msgs:
			mb, err := mailboxOf(b.prefix, m.Subject)
			if err != nil {
				b.log.Debug("skipping announcement", "subject", m.Subject, "err", err)
				continue
			}
			env, err := parseEvent(m.Data)
			if err != nil {
				b.log.Debug("skipping announcement", "subject", m.Subject, "err", err)
				continue
			}
			deliver(mb, env)
		}
	}
}

func (b *Bus) isDone() bool {
	select {
	case <-b.closed:
		return true
	default:
		return false
	}
}

// Close implements relay.Bus: it closes the NATS connection.
func (b *Bus) Close() error {
	b.once.Do(func() {
		b.mu.Lock()
		b.isClosed = true
		b.mu.Unlock()
		close(b.closed)
		b.nc.Close()
	})
	return nil
}
