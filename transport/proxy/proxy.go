// Package proxy dials through an upstream proxy the user already has: a
// SOCKS5 proxy (RFC 1928, with RFC 1929 username and password), such as
// Tor's or an SSH tunnel's, or an HTTP proxy's CONNECT method (RFC 9110
// section 9.3.6, with Basic authentication). A Dialer is a
// transport.NetDialer, so every transport runs through it by taking it as
// its Config.NetDialer.
//
// It is not a transport of its own and adds no disguise: the proxy sees
// the relay's address (host names are passed to it unresolved, so the
// local network sees no DNS lookup), and the path to the proxy is what a
// censor sees. docs/transports.md section 6 is the specification.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/ferry-im/ferry/transport"
)

// Kinds of proxy, as URL schemes.
const (
	SOCKS5 = "socks5"
	HTTP   = "http"
)

// Errors a caller may branch on; each is wrapped in a one-sentence error
// that names the proxy and says what to do.
var (
	// ErrUnreachable: the proxy itself could not be reached.
	ErrUnreachable = errors.New("proxy unreachable")
	// ErrAuth: the proxy wants credentials, or rejected the ones given.
	ErrAuth = errors.New("proxy authentication failed")
	// ErrRefused: the proxy could not or would not connect to the target.
	ErrRefused = errors.New("proxy refused the connection")
	// ErrProtocol: the proxy did not speak the protocol of its scheme.
	ErrProtocol = errors.New("proxy spoke an unexpected protocol")
)

// Config is a parsed proxy URL, and how long to wait for the proxy.
type Config struct {
	Kind     string // SOCKS5 or HTTP
	Addr     string // host:port of the proxy
	User     string // empty: no authentication
	Password string
	// HandshakeTimeout bounds the exchange with the proxy after the
	// connection to it is made (a proxy that does not answer is taken for
	// one of another kind). If zero, DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
}

// DefaultHandshakeTimeout is Config.HandshakeTimeout's default.
const DefaultHandshakeTimeout = 15 * time.Second

// ParseURL parses socks5://[user:password@]host:port (socks5h:// is the
// same: names are always resolved by the proxy) or
// http://[user:password@]host:port.
func ParseURL(raw string) (Config, error) {
	hint := "write it as socks5://[user:password@]host:port or http://[user:password@]host:port"
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return Config{}, fmt.Errorf("proxy URL %q is not valid: %s", raw, hint)
	}
	var c Config
	switch u.Scheme {
	case "socks5", "socks5h":
		c.Kind = SOCKS5
	case "http":
		c.Kind = HTTP
	default:
		return Config{}, fmt.Errorf("proxy URL %q has the unsupported scheme %q: %s", raw, u.Scheme, hint)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return Config{}, fmt.Errorf("proxy URL %q has a path, query or fragment: %s", raw, hint)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return Config{}, fmt.Errorf("proxy URL %q needs a host and a port: %s", raw, hint)
	}
	c.Addr = u.Host
	if u.User != nil {
		c.User = u.User.Username()
		c.Password, _ = u.User.Password()
		if c.Kind == SOCKS5 && (len(c.User) > 255 || len(c.Password) > 255) {
			return Config{}, fmt.Errorf("proxy URL %q has a username or password over 255 bytes, which SOCKS5 cannot carry", raw)
		}
	}
	return c, nil
}

// String returns the proxy's URL with the password left out, for logs
// and messages.
func (c Config) String() string {
	u := url.URL{Scheme: c.Kind, Host: c.Addr} // no password, no timeout
	if c.User != "" {
		u.User = url.User(c.User)
	}
	return u.String()
}

// Dialer connects through a proxy. It is safe for concurrent use.
type Dialer struct {
	cfg     Config
	forward transport.NetDialer
}

var _ transport.NetDialer = (*Dialer)(nil)

// New returns a Dialer for the proxy cfg; it reaches the proxy through
// forward (if nil, a net.Dialer), so proxies can be chained.
func New(cfg Config, forward transport.NetDialer) *Dialer {
	if forward == nil {
		forward = &net.Dialer{KeepAlive: 30 * time.Second}
	}
	return &Dialer{cfg: cfg, forward: forward}
}

// FromURL parses raw (see ParseURL) and returns its Dialer.
func FromURL(raw string, forward transport.NetDialer) (*Dialer, error) {
	cfg, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	return New(cfg, forward), nil
}

// DialContext connects to addr (host:port) through the proxy. network
// must be "tcp" (or "tcp4", "tcp6").
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("dial %s %s through proxy: only tcp goes through a proxy", network, addr)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial %s through proxy: %w", addr, err)
	}
	host, portStr, err := net.SplitHostPort(addr)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil || port < 0 || port > 65535 || len(host) > 255 {
		return nil, fmt.Errorf("dial %s through proxy: not a host:port address", addr)
	}
	conn, err := d.forward.DialContext(ctx, "tcp", d.cfg.Addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dial %s through proxy: %w", addr, ctx.Err())
		}
		return nil, fmt.Errorf("cannot reach the proxy %s (%v); check that it runs and that the proxy URL is right: %w", d.cfg, err, ErrUnreachable)
	}
	timeout := d.cfg.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	dl := time.Now().Add(timeout)
	if cdl, ok := ctx.Deadline(); ok && cdl.Before(dl) {
		dl = cdl
	}
	conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	if d.cfg.Kind == SOCKS5 {
		err = d.socksConnect(conn, host, port)
	} else {
		conn, err = d.httpConnect(conn, addr)
	}
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dial %s through proxy %s: %w", addr, d.cfg, ctx.Err())
		}
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}
