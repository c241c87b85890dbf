package censor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// Wrap applies the engine's policy to conn in-process: conn is a client's
// connection to server, seen from the client, and the returned net.Conn
// is what the client sees through the censor. client is the client
// address the censor keys its state by (tests use distinct addresses to
// act as different users).
//
// The connection is first admitted (Admit); its first Write is the first
// client payload (Inspect). After a Reset verdict the underlying
// connection is closed (with an RST when it is TCP) and every Read and
// Write fails with an error matching syscall.ECONNRESET. After Drop, the
// client's writes succeed but are discarded, while the server's bytes
// still arrive, so the client sees a connection that hangs. Throttle
// paces reads and writes on the engine's Clock. Outages cut the
// connection at its next read or write. Reads before the first write
// (server-first protocols) pass. The returned connection also has a
// method Verdict() Verdict: the verdict it is under.
func (e *Engine) Wrap(conn net.Conn, client, server netip.AddrPort) net.Conn {
	w := &censoredConn{Conn: conn, e: e, flow: &Flow{Client: client, Server: server, Start: e.clock().Now()}}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	v := e.Admit(client.Addr(), server)
	if v.Action != Pass {
		w.apply(v)
		w.inspected = true
	}
	return w
}

// censoredConn is a net.Conn through the censor.
type censoredConn struct {
	net.Conn
	e      *Engine
	ctx    context.Context // done on Close, to end throttle waits
	cancel context.CancelFunc

	mu        sync.Mutex // mu protects the fields below
	flow      *Flow
	inspected bool
	tls       tlsWatch
	watching  bool // a record-shape rule waits for more TLS records
	verdict   Verdict
	dropping  bool // the client's bytes vanish
	nullRoute bool // nothing passes either way
	reset     bool
	up, down  *bucket
}

var _ net.Conn = (*censoredConn)(nil)

// Verdict returns the verdict the connection is under: the latest one
// other than pass, or pass.
func (w *censoredConn) Verdict() Verdict {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.verdict.Action == "" {
		return passVerdict
	}
	return w.verdict
}

// apply puts the connection under v: any verdict replaces a pass, a pass
// never replaces another verdict. w.mu must be held or w unshared.
func (w *censoredConn) apply(v Verdict) {
	if v.Action != Pass || w.verdict.Action == "" || w.verdict.Action == Pass {
		w.verdict = v
	}
	switch v.Action {
	case Reset:
		w.reset = true
		reset(w.Conn)
	case Drop:
		w.dropping = true
	case NullRoute:
		w.dropping, w.nullRoute = true, true
	case Throttle:
		w.up = newBucket(w.e.clock(), v.RateBPS, v.Burst)
		w.down = newBucket(w.e.clock(), v.RateBPS, v.Burst)
	}
}

func resetErr(op string, c net.Conn) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, syscall.ECONNRESET)}
}

// observe scans b, read from direction d, for TLS records, and asks the
// record-shape rules watching the flow about them. w.mu must be held.
func (w *censoredConn) observe(d Direction, b []byte) {
	if !w.watching || !w.tls.add(d, b, w.e.clock().Now().Sub(w.flow.Start)) {
		return
	}
	v, done := w.e.Observe(w.verdict, w.tls.snapshot(w.flow))
	w.watching = !done
	w.apply(v)
}

// check applies a disruption under way. w.mu must be held.
func (w *censoredConn) check() {
	if w.reset || len(w.verdict.outages) == 0 {
		return
	}
	if dv, ok := w.e.Disrupt(w.verdict); ok {
		w.apply(dv)
	}
}

// Write inspects the first payload and forwards, discards or paces b.
func (w *censoredConn) Write(b []byte) (int, error) {
	w.mu.Lock()
	if !w.inspected && len(b) > 0 {
		w.inspected = true
		w.flow.setFirst(b)
		v := w.e.Inspect(w.flow)
		w.apply(v)
		w.watching = len(v.watch) > 0
		w.tls.add(Up, b, w.e.clock().Now().Sub(w.flow.Start))
	} else {
		w.observe(Up, b)
	}
	w.check()
	rst, drop, bk := w.reset, w.dropping, w.up
	w.mu.Unlock()
	switch {
	case rst:
		return 0, resetErr("write", w.Conn)
	case drop:
		return len(b), nil
	case bk == nil:
		return w.Conn.Write(b)
	}
	n := 0
	for n < len(b) {
		chunk := b[n:min(len(b), n+int(bk.burst))]
		if err := bk.wait(w.ctx, len(chunk)); err != nil {
			return n, fmt.Errorf("write: %w", net.ErrClosed)
		}
		k, err := w.Conn.Write(chunk)
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Read reads the server's bytes, paced when throttled.
func (w *censoredConn) Read(b []byte) (int, error) {
	w.mu.Lock()
	w.check()
	rst, bk, null := w.reset, w.down, w.nullRoute
	w.mu.Unlock()
	if rst {
		return 0, resetErr("read", w.Conn)
	}
	if null {
		return 0, discardUntilError(w.Conn)
	}
	if bk != nil && len(b) > int(bk.burst) {
		b = b[:int(bk.burst)]
	}
	n, err := w.Conn.Read(b)
	if n > 0 {
		w.mu.Lock()
		w.observe(Down, b[:n])
		w.mu.Unlock()
	}
	if bk != nil && n > 0 {
		if werr := bk.wait(w.ctx, n); werr != nil && err == nil {
			err = fmt.Errorf("read: %w", net.ErrClosed)
		}
	}
	w.mu.Lock()
	w.check()
	rst = w.reset
	w.mu.Unlock()
	if rst {
		return 0, resetErr("read", w.Conn)
	}
	return n, err
}

// discardUntilError reads and discards c's bytes until a read fails
// (its deadline, or Close), and returns that error.
func discardUntilError(c net.Conn) error {
	var buf [512]byte
	for {
		if _, err := c.Read(buf[:]); err != nil {
			return err
		}
	}
}

// Close closes the underlying connection and ends throttle waits.
func (w *censoredConn) Close() error {
	w.cancel()
	return w.Conn.Close()
}

// Dialer dials connections through an Engine: the in-process censor for
// code that takes a dial function.
type Dialer struct {
	// Engine applies the policy. If nil, connections pass untouched.
	Engine *Engine
	// Client is the client IP the censor sees. If invalid, the local IP
	// of each dialed connection is used.
	Client netip.Addr
	// Dial dials the real connection. If nil, a net.Dialer is used.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DialContext dials addr and returns the connection through the censor
// (see Engine.Wrap). A dial to an address the policy null-routes (an
// ip_block rule) sends nothing and fails as a connect whose SYNs are
// dropped does: when ctx ends, or after SYNTimeout on the engine's clock,
// with an error whose Timeout method reports true (ctx's error when it is
// cancelled).
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.Engine != nil {
		if ap, err := netip.ParseAddrPort(addr); err == nil {
			if _, null := d.Engine.NullRouted(ap); null {
				return nil, d.Engine.hang(ctx, network, ap)
			}
		}
	}
	dial := d.Dial
	if dial == nil {
		nd := net.Dialer{Timeout: 30 * time.Second}
		dial = nd.DialContext
	}
	c, err := dial(ctx, network, addr)
	if err != nil || d.Engine == nil {
		return c, err
	}
	local, remote := addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())
	if d.Client.IsValid() {
		local = netip.AddrPortFrom(d.Client, local.Port())
	}
	if !remote.IsValid() {
		if ap, perr := netip.ParseAddrPort(addr); perr == nil {
			remote = ap
		}
	}
	return d.Engine.Wrap(c, local, remote), nil
}

// hang waits as a connect to a null-routed address does, and returns its
// error.
func (e *Engine) hang(ctx context.Context, network string, server netip.AddrPort) error {
	err := e.clock().Sleep(ctx, SYNTimeout)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		err = os.ErrDeadlineExceeded // "i/o timeout", as a dial that timed out
	}
	return &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(server), Err: err}
}
