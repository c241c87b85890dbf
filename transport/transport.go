// Package transport is the seam between Ferry and the network: a Dialer turns
// "reach this relay endpoint" into a net.Conn, and a Registry maps the
// transport names that appear in links ("tcp") to the dialers a client has
// configured. Each transport lives in its own package (transport/tcp, and
// later https, obfs, socks) with a typed Config; transport/transporttest is
// the conformance suite every one of them runs.
//
// It is not a channel: the conn a Dialer returns carries the channel's Noise
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
)

// Dialer connects to one endpoint address over one transport.
//
// Contract (checked by transporttest.Run):
//   - DialContext returns a connected net.Conn or an error, never both. The
//     address is the Addr of a link.Endpoint of this transport.
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
	DialContext(ctx context.Context, addr string) (net.Conn, error)
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

// Dial dials addr with the transport called name.
func (r *Registry) Dial(ctx context.Context, name, addr string) (net.Conn, error) {
	d, ok := r.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("dial %s %s: %w %q", name, addr, ErrUnknown, name)
	}
	c, err := d.DialContext(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", name, addr, err)
	}
	return c, nil
}
