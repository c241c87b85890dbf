package https

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	utls "github.com/refraction-networking/utls"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
)

// Name is the transport's name in links and registries.
const Name = "https"

// The endpoint parameters of the https transport in links
// (docs/transports.md section 4.3). Unknown parameters are ignored.
const (
	// ParamSNI is the server name: the TLS SNI, the name the certificate
	// must be valid for (unless pinned) and the HTTP :authority. If absent,
	// the host of the endpoint's address.
	ParamSNI = "sni"
	// ParamPin is the unpadded base64url SHA-256 of the server
	// certificate's SubjectPublicKeyInfo. If present, the certificate must
	// have this key and is not checked against the system roots.
	ParamPin = "pin"
	// ParamKey is the relay's secret (Secret.String). Required.
	ParamKey = "key"
)

// DefaultTimeout bounds a dial when Config.Timeout is zero.
const DefaultTimeout = 20 * time.Second

// Config configures the client. The zero value works.
type Config struct {
	// NetDialer dials the TCP connection. If nil, a net.Dialer is used.
	NetDialer transport.NetDialer
	// RootCAs verifies servers without a pin. If nil, the system roots.
	RootCAs *x509.CertPool
	// Rand is the source of every random choice (TLS randoms, key shares,
	// GREASE, extension order, proofs, padding). If nil, crypto/rand.
	Rand io.Reader
	// Now is the clock for certificates and proofs. If nil, time.Now.
	Now func() time.Time
	// Timeout bounds each dial, in addition to the context. If zero,
	// DefaultTimeout; if negative, only the context.
	Timeout time.Duration
}

// Target is where a dial goes, from an endpoint's parameters.
type Target struct {
	Addr   string // host:port
	SNI    string // if empty, the host of Addr
	Pin    []byte // SHA-256 of the certificate's SPKI, or nil
	Secret Secret
}

// Dialer dials https endpoints. It is safe for concurrent use.
type Dialer struct {
	cfg      Config
	unshaped bool       // tests only: no padding of the first frames
	randM    sync.Mutex // randM serialises reads of cfg.Rand
}

var _ transport.Dialer = (*Dialer)(nil)

// New returns a dialer for cfg.
func New(cfg Config) *Dialer { return &Dialer{cfg: cfg} }

// DialContext dials the https endpoint ep (see Dial).
func (c *Dialer) DialContext(ctx context.Context, ep link.Endpoint) (net.Conn, error) {
	t, err := TargetOf(ep)
	if err != nil {
		return nil, err
	}
	return c.Dial(ctx, t)
}

// TargetOf reads an https endpoint's parameters. Parameters it does not
// know are ignored.
func TargetOf(ep link.Endpoint) (Target, error) {
	t := Target{Addr: ep.Addr}
	if ep.Transport != Name {
		return t, fmt.Errorf("https endpoint %s: transport is %q", ep.Addr, ep.Transport)
	}
	if _, _, err := net.SplitHostPort(ep.Addr); err != nil {
		return t, fmt.Errorf("https endpoint %s: the address is not host:port", ep.Addr)
	}
	key, ok := ep.Param(ParamKey)
	if !ok {
		return t, fmt.Errorf("https endpoint %s has no %s parameter: ask the relay's operator for a fresh link", ep.Addr, ParamKey)
	}
	var err error
	if t.Secret, err = ParseSecret(key); err != nil {
		return t, fmt.Errorf("https endpoint %s: the %s parameter is damaged: copy the whole link again", ep.Addr, ParamKey)
	}
	if pin, ok := ep.Param(ParamPin); ok {
		raw, err := b64.DecodeString(pin)
		if err != nil || len(raw) != sha256.Size {
			return t, fmt.Errorf("https endpoint %s: the %s parameter is damaged: copy the whole link again", ep.Addr, ParamPin)
		}
		t.Pin = raw
	}
	t.SNI, _ = ep.Param(ParamSNI)
	return t, nil
}

func (c *Dialer) now() time.Time {
	if c.cfg.Now != nil {
		return c.cfg.Now()
	}
	return time.Now()
}

// read fills b from the configured randomness.
func (c *Dialer) read(b []byte) error {
	if c.cfg.Rand == nil {
		_, err := rand.Read(b)
		return err
	}
	c.randM.Lock()
	defer c.randM.Unlock()
	_, err := io.ReadFull(c.cfg.Rand, b)
	return err
}

// lockedRand is an io.Reader over the client's randomness.
type lockedRand struct{ c *Dialer }

func (r lockedRand) Read(b []byte) (int, error) {
	if err := r.c.read(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Dial connects to t and opens the tunnel. The conn it returns carries the
// relay's bytes; if the server turns out not to accept the upgrade, the
// first Read fails with an error wrapping ErrRefused.
func (c *Dialer) Dial(ctx context.Context, t Target) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial https %s: %w", t.Addr, err)
	}
	if tm := c.timeout(); tm > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, tm)
		defer cancel()
	}
	conn, err := c.dial(ctx, t)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (%v)", cerr, err)
		}
		return nil, fmt.Errorf("dial https %s: %w", t.Addr, err)
	}
	return conn, nil
}

func (c *Dialer) timeout() time.Duration {
	switch {
	case c.cfg.Timeout == 0:
		return DefaultTimeout
	case c.cfg.Timeout < 0:
		return 0
	}
	return c.cfg.Timeout
}

func (c *Dialer) dial(ctx context.Context, t Target) (net.Conn, error) {
	host, port, err := net.SplitHostPort(t.Addr)
	if err != nil {
		return nil, err
	}
	sni := t.SNI
	if sni == "" {
		sni = host
	}
	nd := c.cfg.NetDialer
	if nd == nil {
		nd = &net.Dialer{}
	}
	raw, err := nd.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, err
	}
	bc := &batchConn{Conn: raw}
	tc, err := c.handshake(ctx, bc, sni, t.Pin)
	if err != nil {
		raw.Close()
		return nil, err
	}
	var nonce [nonceLen]byte
	var seed [32]byte
	if err := c.read(nonce[:]); err != nil {
		tc.Close()
		return nil, err
	}
	if err := c.read(seed[:]); err != nil {
		tc.Close()
		return nil, err
	}
	k := deriveKeys(t.Secret)
	authority := sni
	if port != "443" {
		authority = net.JoinHostPort(sni, port)
	}
	h := newH2Conn(tc)
	h.batch = bc
	if d, ok := ctx.Deadline(); ok {
		tc.SetWriteDeadline(d)
	}
	if err := h.start(chromiumRequest(authority, k.path, cookieName+"="+k.proof(c.now(), nonce))); err != nil {
		tc.Close()
		return nil, err
	}
	tc.SetWriteDeadline(time.Time{})
	return newShapedConn(h, true, seed, frames(c.unshaped)), nil
}

// handshake runs the TLS handshake with Chromium's ClientHello.
func (c *Dialer) handshake(ctx context.Context, raw net.Conn, sni string, pin []byte) (*utls.UConn, error) {
	cfg := &utls.Config{
		ServerName: sni,
		RootCAs:    c.cfg.RootCAs,
		Rand:       lockedRand{c},
		Time:       c.cfg.Now,
		// BoringSSL sends full-size records from the start.
		DynamicRecordSizingDisabled: true,
	}
	if pin != nil {
		cfg.InsecureSkipVerify = true // the pin replaces the roots
		cfg.VerifyPeerCertificate = func(certs [][]byte, _ [][]*x509.Certificate) error {
			return checkPin(certs, pin, c.now())
		}
	}
	uc := utls.UClient(raw, cfg, utls.HelloCustom)
	spec, err := chromiumSpec(lockedRand{c})
	if err != nil {
		return nil, err
	}
	if err := uc.ApplyPreset(spec); err != nil {
		return nil, fmt.Errorf("build client hello: %w", err)
	}
	if err := uc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	if p := uc.ConnectionState().NegotiatedProtocol; p != "h2" {
		uc.Close()
		return nil, fmt.Errorf("tls handshake: server chose protocol %q, want h2", p)
	}
	return uc, nil
}

// checkPin accepts a chain whose leaf has the pinned key and is valid at
// now.
func checkPin(certs [][]byte, pin []byte, now time.Time) error {
	if len(certs) == 0 {
		return errors.New("server sent no certificate")
	}
	leaf, err := x509.ParseCertificate(certs[0])
	if err != nil {
		return fmt.Errorf("parse server certificate: %w", err)
	}
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	if subtle.ConstantTimeCompare(sum[:], pin) != 1 {
		return errors.New("server certificate does not have the key pinned in the link")
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("server certificate is not valid now (valid %v to %v)", leaf.NotBefore, leaf.NotAfter)
	}
	return nil
}

// Pin returns the pin of a certificate: the SHA-256 of its
// SubjectPublicKeyInfo.
func Pin(cert *x509.Certificate) []byte {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return sum[:]
}

// frames is the number of shaped frames each way.
func frames(unshaped bool) int {
	if unshaped {
		return 0
	}
	return shapeFrames
}

// Register adds the https transport, configured by cfg, to r under Name.
func Register(r *transport.Registry, cfg Config) error {
	return r.Register(Name, New(cfg))
}
