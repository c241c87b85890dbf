// Package obfs is Ferry's random-looking transport, after obfs4: every byte
// a censor sees is indistinguishable from uniform random, except that the
// client's first packet falls inside an exemption of the Great Firewall's
// fully-encrypted-traffic detector, chosen per relay. The client's and
// relay's ephemeral keys are Elligator 2 representatives; the handshake
// authenticates the relay by the key in its link (and the client by its
// knowledge of the link); hellos and frames carry per-connection random
// padding, and frame lengths are masked. A relay reads on from a
// connection that fails the handshake (garbage, a replay, a byte-changed
// replay) and closes it only after a long timeout drawn per relay, so a
// prober learns nothing from a probe's length or content.
//
// It is not a channel: it authenticates the relay only to keep probers
// out, and its confidentiality is a disguise. The channel's Noise session
// (package channel) runs on top and is what Ferry relies on.
// docs/transports.md section 4 is the specification, with the threat
// model.
package obfs

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
)

// Name is the transport's name in links and registries.
const Name = "obfs"

// Link parameters of an obfs endpoint.
const (
	ParamKey   = "key" // the relay's obfs public key, 32 bytes, base64url without padding
	ParamShape = "fet" // the client's first-packet shape: p6..p16, lo or hi; default from the key
)

// DefaultTimeout bounds a dial and its handshake when Config.Timeout is 0.
const DefaultTimeout = 20 * time.Second

// PrivateKey is a relay's obfs key: an X25519 private key. Its public key
// goes in the relay's link.
type PrivateKey struct {
	k *ecdh.PrivateKey
}

// GenerateKey returns a new key read from r (crypto/rand.Reader if nil).
func GenerateKey(r io.Reader) (PrivateKey, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [32]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return PrivateKey{}, fmt.Errorf("generate obfs key: %w", err)
	}
	return NewPrivateKey(b[:])
}

// NewPrivateKey returns the key whose encoding (Bytes) is b.
func NewPrivateKey(b []byte) (PrivateKey, error) {
	k, err := ecdh.X25519().NewPrivateKey(b)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("obfs key: %w", err)
	}
	return PrivateKey{k: k}, nil
}

// Bytes returns the key's 32-byte encoding. It is secret.
func (k PrivateKey) Bytes() []byte { return k.k.Bytes() }

// PublicKey returns the key's public half, as the link carries it.
func (k PrivateKey) PublicKey() []byte { return k.k.PublicKey().Bytes() }

// Config configures the client half. The zero value works.
type Config struct {
	// NetDialer makes the underlying TCP connections; if nil, a
	// net.Dialer. An upstream proxy goes here.
	NetDialer transport.NetDialer
	// Timeout bounds a dial and its handshake together, in addition to
	// the context. If zero, DefaultTimeout; if negative, only the context.
	Timeout time.Duration
	// Rand supplies keys, padding and lengths; if nil, crypto/rand.Reader.
	Rand io.Reader
	// Now gives the time whose hour the handshake carries; if nil,
	// time.Now.
	Now func() time.Time
}

func (c Config) rand() io.Reader {
	if c.Rand != nil {
		return c.Rand
	}
	return rand.Reader
}

func (c Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Dialer is the client half of obfs. It is safe for concurrent use.
type Dialer struct {
	cfg Config
	nd  transport.NetDialer
}

var _ transport.Dialer = (*Dialer)(nil)

// New returns a Dialer for cfg.
func New(cfg Config) *Dialer {
	d := &Dialer{cfg: cfg, nd: cfg.NetDialer}
	if d.nd == nil {
		d.nd = &net.Dialer{KeepAlive: 30 * time.Second}
	}
	return d
}

// Register adds obfs, configured by cfg, to r under Name.
func Register(r *transport.Registry, cfg Config) error {
	return r.Register(Name, New(cfg))
}

// endpointParams reads the parameters of an obfs endpoint.
func endpointParams(ep link.Endpoint) (pub []byte, sh shape, err error) {
	k, ok := ep.Param(ParamKey)
	if !ok {
		return nil, shape{}, errors.New("endpoint has no key parameter")
	}
	pub, err = base64.RawURLEncoding.DecodeString(k)
	if err != nil || len(pub) != 32 {
		return nil, shape{}, errors.New("endpoint's key parameter is not a 32-byte base64url key")
	}
	if _, err := ecdh.X25519().NewPublicKey(pub); err != nil {
		return nil, shape{}, errors.New("endpoint's key parameter is not an X25519 key")
	}
	sh = shapeFor(pub)
	if v, ok := ep.Param(ParamShape); ok {
		if sh, err = parseShape(v); err != nil {
			return nil, shape{}, fmt.Errorf("endpoint's fet parameter: %w", err)
		}
	}
	return pub, sh, nil
}

// DialContext connects to ep and runs the handshake. ep needs the key
// parameter; fet is optional.
func (d *Dialer) DialContext(ctx context.Context, ep link.Endpoint) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial obfs: %w", err)
	}
	pub, sh, err := endpointParams(ep)
	if err != nil {
		return nil, fmt.Errorf("dial obfs %s: %w", ep.Addr, err)
	}
	if t := d.cfg.Timeout; t >= 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cmpOr(t, DefaultTimeout))
		defer cancel()
	}
	// The hello is made before connecting, so the time from connect to
	// first packet does not show how many key draws it took (obfs4 does
	// the same).
	hello, err := newClientHello(d.cfg.rand(), pub, sh, d.cfg.now())
	if err != nil {
		return nil, fmt.Errorf("dial obfs %s: %w", ep.Addr, err)
	}
	raw, err := d.nd.DialContext(ctx, "tcp", ep.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial obfs: %w", err)
	}
	c, err := d.handshake(ctx, raw, pub, hello)
	if err != nil {
		raw.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("dial obfs %s: %w", ep.Addr, err)
	}
	return c, nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// handshake sends the client hello and reads the server's.
func (d *Dialer) handshake(ctx context.Context, raw net.Conn, pub []byte, hello *clientHello) (*Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	r := d.cfg.rand()
	if _, err := raw.Write(hello.raw); err != nil {
		return nil, fmt.Errorf("send hello: %w", err)
	}
	buf := make([]byte, 0, maxHello+4096)
	for {
		n, err := raw.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		st, keys, used, herr := hello.finish(buf, pub)
		switch {
		case st == helloOK:
			if !stop() {
				return nil, ctx.Err()
			}
			raw.SetDeadline(time.Time{})
			var seed [32]byte
			if _, err := io.ReadFull(r, seed[:]); err != nil {
				return nil, fmt.Errorf("read randomness: %w", err)
			}
			return newConn(raw, keys.s2c, keys.c2s, seed, buf[used:])
		case st == helloBad:
			return nil, herr
		case err != nil:
			return nil, fmt.Errorf("read relay hello: %w", err)
		case len(buf) == cap(buf):
			return nil, errHandshake
		}
	}
}
