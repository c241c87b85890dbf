// Package transport is the seam between Ferry and the network. Its client
// half is a Dialer, which turns a relay endpoint (a link.Endpoint: transport
// name, address and parameters) into a net.Conn; its relay half is a Server,
// which turns the raw connections of a listener into conns that completed the
// transport's handshake and says which endpoint clients reach it at. A
// Registry maps the transport names that appear in links to the dialers a
// client has configured. Each transport lives in its own package
// (transport/tcp, transport/https, transport/obfs) with a typed Config;
// transport/transporttest is the conformance suite every one of them runs.
//
// It is not a channel: the conn a transport yields carries the channel's Noise
// records, and authenticating the relay is package channel's work, never a
// transport's. docs/transports.md is the specification of the seam and of
// each transport.
package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"

	"github.com/ferry-im/ferry/link"
)

// Dialer connects to endpoints of one transport.
//
// Contract (checked by transporttest.Run):
//   - DialContext returns a connected net.Conn or an error, never both. The
//     endpoint is one of this transport's, as a link carries it; parameters
//     the transport does not know are ignored, and a missing or malformed
//     parameter it needs is an error that names it.
//   - ctx bounds only the dial: once DialContext has returned, cancelling
//     ctx does not affect the conn. A ctx already done makes it fail at once
//     with an error that wraps ctx.Err().
//   - The conn is a reliable, ordered byte stream. Write returns only when
//     the bytes are handed to the transport. Close unblocks pending Read and
//     Write on the same conn, which then return errors; after the peer closes
//     cleanly, Read returns io.EOF once the data sent before is consumed.
//   - Deadlines (SetDeadline, SetReadDeadline, SetWriteDeadline) work: a
//     Read or Write blocked past its deadline returns an error whose
//     Timeout() is true, wrapping os.ErrDeadlineExceeded, and the conn stays
//     usable after the deadline is moved.
//   - A Dialer is safe for concurrent use.
type Dialer interface {
	DialContext(ctx context.Context, ep link.Endpoint) (net.Conn, error)
}

// NetDialer makes the underlying connections a transport runs over. A
// *net.Dialer is one; an upstream proxy (SOCKS5, HTTP CONNECT) is another,
// which is how every transport runs through a proxy. Each transport's Config
// has a NetDialer field; if nil, the transport uses a net.Dialer.
type NetDialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Server is the relay half of a transport.
//
// Contract (checked by transporttest.RunServer):
//   - Listener returns a listener whose Accept yields conns that completed
//     this transport's handshake, made from the raw conns accepted from l.
//     A raw conn that stalls or fails the handshake never keeps Accept from
//     returning the conns of others; how such a conn is treated (read on,
//     served a website, closed after a while) is the transport's probe
//     resistance and its documentation says what it does.
//   - Closing the returned listener closes l, makes a blocked Accept return
//     an error wrapping net.ErrClosed, and waits for the goroutines the
//     transport started for handshakes; conns already returned by Accept
//     are the caller's and stay open.
//   - Endpoint returns the link endpoint through which clients reach this
//     server at the public address addr (host:port), with every parameter
//     they need (keys, secrets, pins, server names). It has no side effects
//     and may be called at any time.
type Server interface {
	Listener(l net.Listener) net.Listener
	Endpoint(addr string) link.Endpoint
}

// Registry maps transport names to dialers. The zero value is an empty
// registry ready to use. It is built once, from an explicit list, and is
// safe for concurrent lookups once built; Register is not safe to call
// concurrently with Lookup.
type Registry struct {
	dialers map[string]Dialer
}

// ErrUnknown is returned (wrapped) by Dial for a transport the registry does
// not have.
var ErrUnknown = errors.New("unknown transport")

// NewRegistry returns a registry of the given entries, which must have
// distinct names.
func NewRegistry(entries ...Entry) (*Registry, error) {
	r := new(Registry)
	for _, e := range entries {
		if err := r.Register(e.Name, e.Dialer); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Entry is one transport of a registry.
type Entry struct {
	Name   string // as in links: "tcp"
	Dialer Dialer
}

// Register adds a transport. It fails if the name is empty, already taken,
// or the dialer is nil.
func (r *Registry) Register(name string, d Dialer) error {
	if name == "" || d == nil {
		return errors.New("register transport: empty name or nil dialer")
	}
	if _, ok := r.dialers[name]; ok {
		return fmt.Errorf("register transport %q: already registered", name)
	}
	if r.dialers == nil {
		r.dialers = make(map[string]Dialer)
	}
	r.dialers[name] = d
	return nil
}

// Lookup returns the dialer registered under name.
func (r *Registry) Lookup(name string) (Dialer, bool) {
	if r == nil {
		return nil, false
	}
	d, ok := r.dialers[name]
	return d, ok
}

// Names returns the registered transport names, sorted.
func (r *Registry) Names() []string {
	if r == nil {
		return nil
	}
	names := make([]string, 0, len(r.dialers))
	for n := range r.dialers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Dial dials ep with the transport its Transport names.
func (r *Registry) Dial(ctx context.Context, ep link.Endpoint) (net.Conn, error) {
	d, ok := r.Lookup(ep.Transport)
	if !ok {
		return nil, fmt.Errorf("dial %s %s: %w %q", ep.Transport, ep.Addr, ErrUnknown, ep.Transport)
	}
	c, err := d.DialContext(ctx, ep)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", ep.Transport, ep.Addr, err)
	}
	return c, nil
}
