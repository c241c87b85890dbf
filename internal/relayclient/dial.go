// Package relayclient is the client half of the relay protocol
// (docs/protocol.md sections 5 and 6): it dials a relay through the
// transports of a registry, runs the channel handshake, and then speaks
// frames on one connection: requests matched to their answers by request
// id (SetToken, PutPrekeys, GetBundle, Subscribe), pipelined Sends matched
// by envelope id, the mailbox's Delivers queued for the caller with the
// point at which the relay's backlog ends, Acks, and pings both ways.
//
// It is not the client: it knows nothing of sessions, contacts or the
// local store, and it never decides what to send. It turns dial failures
// into one sentence that says what went wrong (DialError), so that a user
// can tell a wrong relay key from a blocked path.
package relayclient

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/fallback"
)

// Defaults for a zero Dialer.
const (
	DefaultDialTimeout    = 10 * time.Second
	DefaultRequestTimeout = 15 * time.Second
	DefaultPingInterval   = 25 * time.Second
)

// ErrUnreachable is wrapped by every error that means the relay could not
// be reached or the connection to it was lost.
var ErrUnreachable = errors.New("the relay could not be reached")

// Dialer reaches relays. Transports is required; the zero value of every
// other field works.
type Dialer struct {
	// Transports maps the transport names of link endpoints to dialers.
	// Endpoints of transports it lacks are skipped.
	Transports *transport.Registry
	// Order, if not empty, restricts dialing to the transports named, tried
	// in this order (each with the link's endpoints of that transport, in
	// link order). If empty, the link's endpoints are tried in link order.
	Order []string
	// Rand is the randomness of handshakes. If nil, crypto/rand is used.
	Rand io.Reader
	// Logger receives connection events, never keys or frame contents. If
	// nil, nothing is logged.
	Logger *slog.Logger
	// DialTimeout bounds one endpoint's dial and handshake. If zero,
	// DefaultDialTimeout is used.
	DialTimeout time.Duration
	// RequestTimeout bounds the wait for the answer to a request, and for
	// any frame after a ping. If zero, DefaultRequestTimeout is used.
	RequestTimeout time.Duration
	// PingInterval is how often an idle connection pings the relay. If
	// zero, DefaultPingInterval is used.
	PingInterval time.Duration
	// Fallback races a relay's endpoints and remembers per network what
	// worked. If nil, one is made on first use, preferring DefaultPrefer
	// and keeping Memory. Not used when Order is set: the order is then
	// the user's.
	Fallback *fallback.Dialer
	// Memory is the memory of the Fallback made when it is nil (the client
	// keeps it in its profile). If nil, a new one.
	Memory *fallback.Memory
	// Stagger is the delay between the starts of a race's attempts; if
	// zero, fallback.DefaultStagger.
	Stagger time.Duration
	// Watch configures the watcher of each connection, which closes it
	// when the relay stops answering (fallback.Watch).
	Watch fallback.WatchConfig
	// Rank, if set and Order is empty, orders a link's usable endpoints by
	// the relay's transport ranking (internal/rankcache) and reports
	// whether one holds for this relay and network: then the race tries
	// them in that order instead of the memory's and DefaultPrefer's
	// (what a monitor of this network measured wins over what this
	// device saw).
	Rank func(r link.Relay, eps []link.Endpoint) ([]link.Endpoint, bool)

	once   sync.Once // makes Fallback
	routes routes
}

func (d *Dialer) rand() io.Reader {
	if d.Rand == nil {
		return rand.Reader
	}
	return d.Rand
}

func (d *Dialer) logger() *slog.Logger {
	if d.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Logger
}

func orDefault(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

// Dial connects to relay r, trying its endpoints (see Order) until one
// completes the channel handshake with static as the client's key. Every
// failure wraps ErrUnreachable; a *DialError says why each endpoint
// failed. If ctx ends, Dial returns ctx's error.
func (d *Dialer) Dial(ctx context.Context, r link.Relay, static channel.KeyPair) (*Conn, error) {
	eps, err := d.endpoints(r)
	if err != nil {
		return nil, err
	}
	fb := d.race()
	ranked := false
	if d.Rank != nil && len(d.Order) == 0 {
		if r, ok := d.Rank(r, eps); ok {
			eps, ranked = r, true
			fb = fallback.New(fallback.Config{Prefer: transportNames(eps), Stagger: d.Stagger})
		}
	}
	var mu sync.Mutex // mu protects de
	de := &DialError{}
	won, ep, err := fallback.Race(ctx, fb, eps, func(ctx context.Context, e link.Endpoint) (*dialed, error) {
		x, a := d.dialOne(ctx, e, r.Key, static)
		if x != nil {
			return x, nil
		}
		if ctx.Err() == nil {
			d.logger().Info("relay endpoint failed", "transport", e.Transport, "addr", e.Addr, "cause", a.Cause.String())
			mu.Lock()
			de.Attempts = append(de.Attempts, a)
			mu.Unlock()
			d.routes.left(e.Transport, e.Transport+" failed: "+a.Cause.String())
		}
		return nil, a.Err
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dial relay: %w", ctx.Err())
		}
		mu.Lock()
		defer mu.Unlock()
		return nil, de
	}
	if len(d.Order) > 0 || ranked {
		fb = nil // a throwaway: nothing to remember
	}
	if rt, changed := d.routes.use(r.Key, ep, time.Now()); changed {
		d.logger().Info("relay reached", "transport", rt.Transport, "why", rt.Why)
	}
	return newConn(won, fb, &d.routes, d), nil
}

// Endpoints lists the endpoints of r that Dial tries, in the order of the
// relay's transport ranking when one holds (ranked is then set), else in
// link order (the race may then start with the transport that worked last
// on this network); or it fails as Dial would if there are none.
func (d *Dialer) Endpoints(r link.Relay) (eps []link.Endpoint, ranked bool, err error) {
	if eps, err = d.endpoints(r); err != nil {
		return nil, false, err
	}
	if d.Rank != nil && len(d.Order) == 0 {
		if re, ok := d.Rank(r, eps); ok {
			return re, true, nil
		}
	}
	return eps, false, nil
}

// endpoints lists the endpoints of r to try, in order.
func (d *Dialer) endpoints(r link.Relay) ([]link.Endpoint, error) {
	var eps []link.Endpoint
	if len(d.Order) == 0 {
		for _, e := range r.Endpoints {
			if _, ok := d.Transports.Lookup(e.Transport); ok {
				eps = append(eps, e)
			}
		}
	} else {
		for _, name := range d.Order {
			for _, e := range r.Endpoints {
				if e.Transport == name {
					eps = append(eps, e)
				}
			}
		}
	}
	if len(eps) == 0 {
		return nil, &DialError{NoEndpoint: true, Have: transportsOf(r), Usable: d.usable()}
	}
	return eps, nil
}

func (d *Dialer) usable() []string {
	if len(d.Order) > 0 {
		return d.Order
	}
	return d.Transports.Names()
}

// transportNames returns the transports of eps in order, once each.
func transportNames(eps []link.Endpoint) []string {
	return transportsOf(link.Relay{Endpoints: eps})
}

func transportsOf(r link.Relay) []string {
	var names []string
	for _, e := range r.Endpoints {
		if !slices.Contains(names, e.Transport) {
			names = append(names, e.Transport)
		}
	}
	return names
}

// dialOne dials one endpoint and runs the handshake, returning the channel
// or what went wrong.
func (d *Dialer) dialOne(ctx context.Context, e link.Endpoint, relayKey [32]byte, static channel.KeyPair) (*dialed, Attempt) {
	dctx, cancel := context.WithTimeout(ctx, orDefault(d.DialTimeout, DefaultDialTimeout))
	defer cancel()
	a := Attempt{Endpoint: e}
	nc, err := d.Transports.Dial(dctx, e)
	if err != nil {
		a.Err, a.Cause = err, classify(err, false)
		return nil, a
	}
	w := fallback.Watch(nc, d.Watch)
	start := time.Now()
	ch, err := (&channel.Config{Rand: d.rand(), Logger: d.logger()}).Client(dctx, w, static, relayKey)
	if err != nil {
		a.Err, a.Cause = err, classify(err, true)
		if a.Cause == CauseHandshake && time.Since(start) >= refusalWindow {
			// A relay refuses a bad handshake as soon as it has read it; a
			// close this late is the relay (or a middlebox) giving up on a
			// handshake that never reached it.
			a.Cause = CauseSilent
		}
		return nil, a
	}
	return &dialed{ch: ch, w: w, ep: e}, a
}

// refusalWindow is how soon after the first handshake message a relay's
// close means it refused the handshake (a wrong key or another version).
// A relay decides as soon as the message arrives; a close after this long
// is the relay's handshake timeout (10 s by default) ending a handshake
// that something on the path kept from it.
const refusalWindow = 3 * time.Second

// Cause is why one endpoint could not be reached.
type Cause int

// Causes, from the least to the most telling: DialError reports the most
// telling one among its attempts.
const (
	CauseOther     Cause = iota // anything else
	CauseRefused                // nothing listens at the address
	CauseNoAnswer               // the connection was not set up in time
	CauseDNS                    // the host name does not resolve
	CauseSilent                 // connected, but the handshake got no answer in time
	CauseReset                  // the connection was reset on the way
	CauseHandshake              // the relay closed the handshake: wrong key or another version
)

var causeNames = []string{"other", "refused", "no answer", "dns", "silent", "reset", "handshake"}

func (c Cause) String() string {
	if int(c) < len(causeNames) {
		return causeNames[c]
	}
	return fmt.Sprintf("cause(%d)", int(c))
}

// classify maps a dial (handshake false) or handshake error to its cause.
func classify(err error, handshake bool) Cause {
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		return CauseReset
	case errors.As(err, &dns):
		return CauseDNS
	case errors.Is(err, syscall.ECONNREFUSED):
		return CauseRefused
	case handshake && (errors.Is(err, channel.ErrHandshake) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
		return CauseHandshake
	case isTimeout(err) && handshake:
		return CauseSilent
	case isTimeout(err):
		return CauseNoAnswer
	}
	return CauseOther
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// Attempt is one endpoint's failure.
type Attempt struct {
	Endpoint link.Endpoint
	Cause    Cause
	Err      error
}

// DialError says why no endpoint of a relay could be reached. Its Error
// is one sentence for the user, naming the most telling cause.
type DialError struct {
	// Attempts are the endpoints tried, in order.
	Attempts []Attempt
	// NoEndpoint is set when no endpoint could be tried: the link has no
	// transport that this client may use. Have lists the link's
	// transports, Usable the client's.
	NoEndpoint   bool
	Have, Usable []string
}

// Unwrap makes a DialError match ErrUnreachable.
func (e *DialError) Unwrap() error { return ErrUnreachable }

// Cause returns the most telling cause among the attempts.
func (e *DialError) Cause() Cause {
	c := CauseOther
	for _, a := range e.Attempts {
		c = max(c, a.Cause)
	}
	return c
}

// causeSentences say what each cause means to the user; %s is the
// endpoint.
var causeSentences = map[Cause]string{
	CauseHandshake: "the relay at %s refused the handshake: the relay key in the link is wrong, or the relay runs another version of Ferry",
	CauseReset:     "the connection to %s was reset on the way: something on the network path is blocking it; try another transport or network",
	CauseSilent:    "%s accepted the connection but never answered: something on the network path may be dropping Ferry's traffic; try another transport",
	CauseDNS:       "the relay's host name in %s does not resolve: check the link or your DNS",
	CauseNoAnswer:  "no answer from %s: the relay may be down, or the network path blocks it",
	CauseRefused:   "nothing answers at %s: the relay is not running there, or the link's address is wrong",
}

func (e *DialError) Error() string {
	if e.NoEndpoint {
		return fmt.Sprintf("the relay's link offers %s, and this Ferry may use only %s",
			strings.Join(e.Have, ", "), strings.Join(e.Usable, ", "))
	}
	c := e.Cause()
	var a Attempt
	var where []string // every endpoint that failed this way, once
	for _, x := range e.Attempts {
		if x.Cause != c {
			continue
		}
		if len(where) == 0 {
			a = x
		}
		if at := x.Endpoint.Transport + " " + x.Endpoint.Addr; !slices.Contains(where, at) {
			where = append(where, at)
		}
	}
	if len(where) == 0 && len(e.Attempts) > 0 {
		a = e.Attempts[len(e.Attempts)-1]
		where = []string{a.Endpoint.Transport + " " + a.Endpoint.Addr}
	}
	at := strings.Join(where, ", ")
	if n := len(where); n > 1 {
		at = strings.Join(where[:n-1], ", ") + " or " + where[n-1]
	}
	if f, ok := causeSentences[c]; ok {
		return fmt.Sprintf(f, at)
	}
	return fmt.Sprintf("cannot reach the relay at %s: %v", at, a.Err)
}
