// Package tcp is the plain TCP transport: the channel's Noise records go
// straight onto a TCP connection. It is fast and it hides nothing from a
// censor beyond what Noise hides (see docs/transports.md): use it on open
// networks and as the baseline the disguised transports are measured
// against.
package tcp

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
)

// Name is the transport's name in links and registries.
const Name = "tcp"

// Defaults for a zero Config.
const (
	DefaultTimeout   = 15 * time.Second
	DefaultKeepAlive = 30 * time.Second
)

// Config configures the TCP dialer. The zero value works.
type Config struct {
	// Timeout bounds each dial, in addition to the context's deadline.
	// If zero, DefaultTimeout is used; if negative, only the context bounds
	// the dial.
	Timeout time.Duration
	// KeepAlive is the TCP keep-alive period. If zero, DefaultKeepAlive is
	// used; if negative, keep-alives are off.
	KeepAlive time.Duration
	// LocalAddr, if not nil, is the local address to dial from.
	LocalAddr *net.TCPAddr
	// Resolver, if not nil, resolves host names; else net.DefaultResolver.
	Resolver *net.Resolver
	// NetDialer, if not nil, makes the connections instead of a net.Dialer
	// (an upstream proxy); Timeout, KeepAlive, LocalAddr and Resolver then
	// do not apply.
	NetDialer transport.NetDialer
}

// Dialer dials TCP connections. It is safe for concurrent use.
type Dialer struct {
	d  net.Dialer
	nd transport.NetDialer // d, or Config.NetDialer
}

var (
	_ transport.Dialer = (*Dialer)(nil)
	_ transport.Server = Server{}
)

// New returns a Dialer for cfg.
func New(cfg Config) *Dialer {
	d := &Dialer{}
	d.nd = &d.d
	if cfg.NetDialer != nil {
		d.nd = cfg.NetDialer
	}
	d.d.Timeout = cfg.timeout()
	d.d.KeepAlive = cfg.keepAlive()
	d.d.Resolver = cfg.Resolver
	if cfg.LocalAddr != nil {
		d.d.LocalAddr = cfg.LocalAddr
	}
	return d
}

func (c Config) timeout() time.Duration {
	switch {
	case c.Timeout == 0:
		return DefaultTimeout
	case c.Timeout < 0:
		return 0
	}
	return c.Timeout
}

func (c Config) keepAlive() time.Duration {
	if c.KeepAlive == 0 {
		return DefaultKeepAlive
	}
	return c.KeepAlive // negative disables, as in net.Dialer
}

// DialContext connects to ep.Addr (host:port). The tcp transport has no
// parameters.
func (d *Dialer) DialContext(ctx context.Context, ep link.Endpoint) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial tcp: %w", err)
	}
	c, err := d.nd.DialContext(ctx, "tcp", ep.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial tcp: %w", err)
	}
	return c, nil
}

// Server is the relay half of the tcp transport: it adds nothing, so its
// listener is the raw listener itself. The zero value is ready to use.
type Server struct{}

// Listener returns l: every accepted TCP connection is already a tcp
// transport conn.
func (Server) Listener(l net.Listener) net.Listener { return l }

// Endpoint returns the endpoint tcp=addr.
func (Server) Endpoint(addr string) link.Endpoint {
	return link.Endpoint{Transport: Name, Addr: addr}
}

// Register adds the TCP transport, configured by cfg, to r under Name.
func Register(r *transport.Registry, cfg Config) error {
	return r.Register(Name, New(cfg))
}
