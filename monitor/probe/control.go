package probe

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/ferry-im/ferry/censor"
	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/transport"
)

// chromiumHello is a ClientHello of Debian's Chromium 156, captured on
// loopback by censor's TestChromiumHello (a copy of
// censor/testdata/chromium-hello.bin; TestHelloIsCensorCapture fails when
// the two differ). A JA4 gate that lets browsers through lets it through.
//
//go:embed chromium-hello.bin
var chromiumHello []byte

// browserHello returns the captured Chromium ClientHello with sni as its
// server name and a fresh random and session id. Its key shares are the
// captured ones: a server answers it with a ServerHello, but the
// handshake cannot go on (docs/monitor.md, "Controls").
func browserHello(sni string, r io.Reader) ([]byte, error) {
	h, err := censor.ParseClientHello(chromiumHello)
	if err != nil {
		return nil, fmt.Errorf("parse captured hello: %w", err)
	}
	if _, err := io.ReadFull(r, h.Random); err != nil {
		return nil, fmt.Errorf("make hello: %w", err)
	}
	if _, err := io.ReadFull(r, h.SessionID); err != nil {
		return nil, fmt.Errorf("make hello: %w", err)
	}
	for i, typ := range h.Extensions {
		if typ == 0x0000 { // server_name: list(2) || type(1)=0 || name(2) || name
			n := len(sni)
			h.ExtensionData[i] = append([]byte{byte((n + 3) >> 8), byte(n + 3), 0, byte(n >> 8), byte(n)}, sni...)
		}
	}
	return h.Marshal()
}

// ControlConfig configures a Control. URL is required.
type ControlConfig struct {
	// URL is a page of the neutral reference site, https://host[:port]/path:
	// a site the censor leaves alone, large enough for a rate (256 KiB or
	// more).
	URL string
	// Addr, if set, is dialed instead of the URL's host and port.
	Addr string
	// NetDialer makes the connections (the same path as the probe's). If
	// nil, a net.Dialer is used.
	NetDialer transport.NetDialer
	// FetchBytes is how much of the page to download for the rate.
	// Default 256 KiB; negative for no download.
	FetchBytes int64
	// TLS configures the download's TLS client; its ServerName is the
	// URL's host. If nil, the system's roots.
	TLS *tls.Config
	// Rand draws the hello's random. If nil, crypto/rand is used.
	Rand io.Reader
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
}

// Control measures the reference site through a path: a browser's TLS
// ClientHello must get a ServerHello (the control passes), then, in the
// post control, a page is downloaded over Go's TLS for the path's rate (a download that fails
// does not fail the control: a censor that lets only browsers' hellos
// through stops it). It is a monitor.ControlProbe.
type Control struct {
	cfg  ControlConfig
	host string
	addr string
}

var _ monitor.ControlProbe = (*Control)(nil)

// NewControl returns a Control for cfg.
func NewControl(cfg ControlConfig) (*Control, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return nil, fmt.Errorf("control %q: an https:// URL of a neutral site is needed", cfg.URL)
	}
	addr := cfg.Addr
	if addr == "" {
		port := u.Port()
		if port == "" {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	if cfg.NetDialer == nil {
		cfg.NetDialer = &net.Dialer{}
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FetchBytes == 0 {
		cfg.FetchBytes = 256 << 10
	}
	return &Control{cfg: cfg, host: u.Hostname(), addr: addr}, nil
}

// Control runs the control: the hello, and the download too when post.
func (c *Control) Control(ctx context.Context, post bool) monitor.Control {
	start := c.cfg.Now()
	res := monitor.Control{Target: c.cfg.URL, Outcome: monitor.Outcome{Start: start, OK: true}}
	if stage, err := c.hello(ctx); err != nil {
		res.Fail(stage, err)
	} else if post && c.cfg.FetchBytes > 0 {
		tr, err := c.fetch(ctx)
		res.Transfer = tr
		if err != nil {
			res.Detail = "the page download failed (the handshake passed): " + err.Error()
		}
	}
	res.Runtime = c.cfg.Now().Sub(start)
	return res
}

// hello sends the browser's ClientHello and reads the answer's first
// record: it must be a ServerHello.
func (c *Control) hello(ctx context.Context) (monitor.Stage, error) {
	conn, err := c.cfg.NetDialer.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			return monitor.StageDNS, err
		}
		return monitor.StageConnect, err
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	hello, err := browserHello(c.host, c.cfg.Rand)
	if err != nil {
		return monitor.StageLocal, err
	}
	if _, err := conn.Write(hello); err != nil {
		return monitor.StageTLS, err
	}
	var hdr [9]byte // record header (5) and handshake header (4)
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return monitor.StageTLS, err
	}
	switch {
	case hdr[0] == 0x15:
		return monitor.StageTLS, tls.AlertError(hdr[6])
	case hdr[0] != 0x16 || hdr[5] != 0x02:
		return monitor.StageTLS, fmt.Errorf("tls: the answer to a ClientHello is not a ServerHello (record %#02x, message %#02x)", hdr[0], hdr[5])
	}
	return "", nil
}

// fetch downloads up to FetchBytes of the page and returns the rate of
// the second half of the bytes.
func (c *Control) fetch(ctx context.Context) (monitor.Transfer, error) {
	var stats *connStats
	tc := &tls.Config{ServerName: c.host}
	if c.cfg.TLS != nil {
		tc = c.cfg.TLS.Clone()
		tc.ServerName = c.host
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			conn, err := c.cfg.NetDialer.DialContext(ctx, network, c.addr)
			if err != nil {
				return nil, err
			}
			stats = &connStats{now: c.cfg.Now}
			return &watchedConn{Conn: conn, stats: stats}, nil
		},
		TLSClientConfig:   tc,
		DisableKeepAlives: true,
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.cfg.URL, nil)
	if err != nil {
		return monitor.Transfer{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return monitor.Transfer{}, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, c.cfg.FetchBytes)); err != nil {
		return monitor.Transfer{}, err
	}
	if stats == nil {
		return monitor.Transfer{}, nil
	}
	if _, down, _ := stats.snapshot(); down < minTransfer {
		return monitor.Transfer{}, nil // too small a page for a rate
	}
	return stats.sustained(), nil
}

// minTransfer is the smallest download a rate is computed from.
const minTransfer = 32 << 10
