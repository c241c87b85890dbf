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
}

// Dialer dials TCP connections. It is safe for concurrent use.
type Dialer struct {
	d net.Dialer
}

var _ transport.Dialer = (*Dialer)(nil)

// New returns a Dialer for cfg.
func New(cfg Config) *Dialer {
	d := &Dialer{}
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

// DialContext connects to addr (host:port).
func (d *Dialer) DialContext(ctx context.Context, addr string) (net.Conn, error) {
	c, err := d.d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial tcp: %w", err)
	}
	return c, nil
}

// Register adds the TCP transport, configured by cfg, to r under Name.
func Register(r *transport.Registry, cfg Config) error {
	return r.Register(Name, New(cfg))
}
