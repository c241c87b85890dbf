// Package fallback finds the transport that works on the network a client
// is on: it races a relay's endpoints in the manner of Happy Eyeballs
// (RFC 8305 section 5: one attempt at a time, the next one started when
// the previous has run for a stagger delay or failed, the first success
// wins and the others are cancelled), in an order learnt per network
// (Memory, keyed by NetworkKey), and it takes reports of sessions that a
// censor stopped after they were set up, so the next race tries their
// transport last.
//
// It is not a transport and holds no session: the client library decides
// when a session is blocked or throttled (docs/client.md) and redials
// through a Dialer. docs/transports.md section 7 is the specification.
package fallback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
)

// DefaultStagger is the delay before the next attempt when Config.Stagger
// is 0: RFC 8305's recommended Connection Attempt Delay.
const DefaultStagger = 250 * time.Millisecond

// Config configures a Dialer. The zero value works for Race; Dial needs
// Transports.
type Config struct {
	// Transports dials each endpoint in Dial; endpoints of transports it
	// lacks are skipped.
	Transports *transport.Registry
	// Stagger is how long an attempt runs alone before the next starts.
	// If zero, DefaultStagger.
	Stagger time.Duration
	// Memory is what worked on which network; if nil, a new empty one.
	// The client keeps it in its profile (Memory is JSON-encodable).
	Memory *Memory
	// Prefer lists transports to try before the others, in this order,
	// where the memory knows nothing better; the rest keep the link's
	// order. The client prefers the disguised transports (https, obfs)
	// over tcp, which a censor sees through (docs/transports.md section 2).
	Prefer []string
	// Network returns the key of the network the client is on now; if
	// nil, NetworkKey.
	Network func() string
	// Now gives the time the memory records; if nil, time.Now.
	Now func() time.Time
}

// Dialer races endpoints. It is safe for concurrent use. Close waits for
// the attempts that lost a race to end.
type Dialer struct {
	cfg Config
	mem *Memory
	wg  sync.WaitGroup // attempts still running after their race ended
}

// New returns a Dialer for cfg.
func New(cfg Config) *Dialer {
	d := &Dialer{cfg: cfg, mem: cfg.Memory}
	if d.mem == nil {
		d.mem = new(Memory)
	}
	return d
}

// Memory returns the dialer's memory.
func (d *Dialer) Memory() *Memory { return d.mem }

// Close waits for the attempts that lost their races to end and close
// what they made.
func (d *Dialer) Close() error {
	d.wg.Wait()
	return nil
}

func (d *Dialer) now() time.Time {
	if d.cfg.Now != nil {
		return d.cfg.Now()
	}
	return time.Now()
}

func (d *Dialer) network() string {
	if d.cfg.Network != nil {
		return d.cfg.Network()
	}
	return NetworkKey()
}

func (d *Dialer) stagger() time.Duration {
	if d.cfg.Stagger > 0 {
		return d.cfg.Stagger
	}
	return DefaultStagger
}

// Order returns eps in the order a race tries them on the current network:
// transports that worked here and have not failed since first, then those
// not tried here (those in Config.Prefer first, in its order, then the
// others in the link's order), then those that failed here, the most
// recent failure last.
func (d *Dialer) Order(eps []link.Endpoint) []link.Endpoint {
	pref := slices.Clone(eps)
	slices.SortStableFunc(pref, func(a, b link.Endpoint) int {
		return preferRank(d.cfg.Prefer, a.Transport) - preferRank(d.cfg.Prefer, b.Transport)
	})
	return d.mem.order(d.network(), pref, d.now())
}

// preferRank is name's index in prefer, or len(prefer) if absent.
func preferRank(prefer []string, name string) int {
	if i := slices.Index(prefer, name); i >= 0 {
		return i
	}
	return len(prefer)
}

// Failed records that a session over ep's transport was stopped after it
// was set up (blocked, reset, throttled), on the current network.
func (d *Dialer) Failed(ep link.Endpoint, reason string) {
	d.mem.failed(d.network(), ep.Transport, reason, d.now())
}

// ErrNoEndpoint is returned (wrapped) by Race when there is no endpoint to
// try.
var ErrNoEndpoint = errors.New("no endpoint to try")

type result[C any] struct {
	i   int
	c   C
	err error
}

// Race connects to one of eps with connect, in Order, starting the next
// attempt when the running ones have gone on for Stagger or one has
// failed. It returns the first success and the endpoint it reached;
// attempts still running are cancelled, and any that succeed later are
// closed. Successes and failures (not cancellations) go into the memory.
// If every attempt fails, the error joins theirs.
func Race[C io.Closer](ctx context.Context, d *Dialer, eps []link.Endpoint, connect func(ctx context.Context, ep link.Endpoint) (C, error)) (C, link.Endpoint, error) {
	var zero C
	order := d.Order(eps)
	if len(order) == 0 {
		return zero, link.Endpoint{}, fmt.Errorf("race endpoints: %w", ErrNoEndpoint)
	}
	network := d.network()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result[C], len(order))
	var mu sync.Mutex // mu protects decided
	decided := false
	start := func(i int) {
		d.wg.Go(func() {
			c, err := connect(rctx, order[i])
			mu.Lock()
			late := decided
			mu.Unlock()
			if late {
				if err == nil {
					c.Close()
				}
				return
			}
			results <- result[C]{i, c, err}
		})
	}
	var errs []error
	started, failed := 1, 0
	start(0)
	timer := time.NewTimer(d.stagger())
	defer timer.Stop()
	for {
		select {
		case r := <-results:
			if r.err == nil {
				mu.Lock()
				decided = true
				mu.Unlock()
				cancel()
				drain(results)
				d.mem.succeeded(network, order[r.i].Transport, d.now())
				return r.c, order[r.i], nil
			}
			failed++
			if ctx.Err() == nil {
				d.mem.failed(network, order[r.i].Transport, r.err.Error(), d.now())
			}
			errs = append(errs, r.err)
			if failed == len(order) {
				return zero, link.Endpoint{}, errors.Join(errs...)
			}
			if started < len(order) { // a failure starts the next at once
				start(started)
				started++
				timer.Reset(d.stagger())
			}
		case <-timer.C:
			if started < len(order) {
				start(started)
				started++
				timer.Reset(d.stagger())
			}
		case <-ctx.Done():
			mu.Lock()
			decided = true
			mu.Unlock()
			drain(results)
			return zero, link.Endpoint{}, fmt.Errorf("race endpoints: %w", ctx.Err())
		}
	}
}

// drain closes the successes already queued after a race is decided.
func drain[C io.Closer](results chan result[C]) {
	for {
		select {
		case r := <-results:
			if r.err == nil {
				r.c.Close()
			}
		default:
			return
		}
	}
}

// Dial races eps over the Transports registry and returns the conn of
// the first endpoint whose transport connects. Endpoints of transports
// the registry lacks are skipped.
func (d *Dialer) Dial(ctx context.Context, eps []link.Endpoint) (net.Conn, link.Endpoint, error) {
	known := slices.DeleteFunc(slices.Clone(eps), func(e link.Endpoint) bool {
		_, ok := d.cfg.Transports.Lookup(e.Transport)
		return !ok
	})
	return Race(ctx, d, known, func(ctx context.Context, ep link.Endpoint) (net.Conn, error) {
		return d.cfg.Transports.Dial(ctx, ep)
	})
}
