package censor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Middlebox is a TCP forwarder that plays the censor: it accepts
// connections, forwards each to Upstream, and applies a policy to it. It
// reads the first client payload (while forwarding the server's bytes, so
// server-first protocols work), asks the engine for a verdict, and passes,
// drops, resets or throttles the flow. It writes one JSON line per flow
// with the verdict to Log (see LogEntry), and one per server the engine
// blocks after probing. Flows that pass are spliced by the kernel once
// their first records are seen.
type Middlebox struct {
	// Upstream is the host:port every connection is forwarded to.
	Upstream string
	// Policy is the policy applied when Engine is nil. If both are nil,
	// every flow passes.
	Policy *Policy
	// Engine, if set, decides on the flows; it may be shared with other
	// middleboxes or in-process users, and Close does not close it. If
	// nil, the middlebox makes its own from Policy, Rand, Clock, Logger
	// and Prober, and Close closes it.
	Engine *Engine
	// Log receives one JSON line per flow and verdict. If nil, nothing is
	// written.
	Log io.Writer
	// Rand, Clock, Logger and Prober configure the middlebox's own engine;
	// see Engine. Clock also times the throttle.
	Rand   io.Reader
	Clock  Clock
	Logger *slog.Logger
	Prober *Prober
	// Dial connects to Upstream. If nil, a net.Dialer is used.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// HelloTimeout is how long the middlebox waits for the rest of a TLS
	// ClientHello split over several reads. If zero, 300 ms is used.
	HelloTimeout time.Duration
	// OnFlow, if set, is called with every flow and its verdict when the
	// flow ends.
	OnFlow func(*Flow, Verdict)
	// Ready, if set, is called once by Serve when it applies the policy to
	// the listener: before it accepts, or once it drops the listener's
	// SYNs for a null-routed upstream.
	Ready func()

	mu      sync.Mutex // mu protects the fields below and writes to Log
	engine  *Engine
	owned   bool // engine was made here
	conns   map[net.Conn]struct{}
	cancels []context.CancelFunc
	closed  bool
	wg      sync.WaitGroup // every Serve and connection goroutine
}

// LogEntry is one line of the middlebox's log.
type LogEntry struct {
	// Time is when the flow started (or the server was blocked).
	Time   time.Time `json:"time"`
	Client string    `json:"client,omitempty"`
	Server string    `json:"server"`
	// Kind, Host and JA4 describe the first client payload.
	Kind Kind   `json:"kind,omitempty"`
	Host string `json:"host,omitempty"`
	JA4  string `json:"ja4,omitempty"`
	// Rule, Action and Evidence are the verdict; Rule is empty when no
	// rule fired.
	Rule     string `json:"rule"`
	Action   Action `json:"action"`
	Evidence string `json:"evidence,omitempty"`
	// BytesUp and BytesDown are the bytes forwarded to the server and to
	// the client.
	BytesUp   int64 `json:"bytes_up"`
	BytesDown int64 `json:"bytes_down"`
	// ServerClose is how the server's side ended: FIN, RST or open, and
	// ServerCloseMS when the server's FIN or RST came, from the flow's
	// start.
	ServerClose   string  `json:"server_close,omitempty"`
	ServerCloseMS float64 `json:"server_close_ms,omitempty"`
	DurationMS    float64 `json:"duration_ms"`
}

// ErrMiddleboxClosed is returned by Serve after Close.
var ErrMiddleboxClosed = errors.New("censor: middlebox closed")

func (m *Middlebox) clock() Clock {
	if m.Clock == nil {
		return SystemClock{}
	}
	return m.Clock
}

func (m *Middlebox) helloTimeout() time.Duration {
	if m.HelloTimeout > 0 {
		return m.HelloTimeout
	}
	return 300 * time.Millisecond
}

// init sets up the engine. m.mu must be held.
func (m *Middlebox) init() *Engine {
	if m.engine != nil {
		return m.engine
	}
	if m.Engine != nil {
		m.engine = m.Engine
	} else {
		m.engine = &Engine{Policy: m.Policy, Rand: m.Rand, Clock: m.Clock, Logger: m.Logger, Prober: m.Prober}
		m.owned = true
		m.engine.OnBlock = m.logBlock
	}
	m.conns = make(map[net.Conn]struct{})
	return m.engine
}

// Serve accepts connections on ln and forwards them until ctx is done,
// Close is called or ln fails. It closes ln before returning, and returns
// nil after ctx is done, ErrMiddleboxClosed after Close, or the accept
// error. Connections still open when it returns are closed.
func (m *Middlebox) Serve(ctx context.Context, ln net.Listener) error {
	if m.Upstream == "" {
		return errors.New("serve: middlebox has no upstream")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		_ = ln.Close()
		return ErrMiddleboxClosed
	}
	e := m.init()
	m.cancels = append(m.cancels, cancel)
	m.wg.Add(1)
	m.mu.Unlock()
	defer m.wg.Done()
	if err := e.Check(); err != nil {
		_ = ln.Close()
		return fmt.Errorf("serve: %w", err)
	}
	// The engine keys its state by the server's address: resolve a host
	// name once, so that every flow has the same key. With a custom Dial,
	// a name that does not resolve keeps the zero address as its key.
	server, err := netip.ParseAddrPort(m.Upstream)
	if err != nil {
		ta, rerr := net.ResolveTCPAddr("tcp", m.Upstream)
		switch {
		case rerr == nil:
			server = addrPort(ta)
		case m.Dial == nil:
			_ = ln.Close()
			return fmt.Errorf("serve: resolve upstream: %w", rerr)
		}
	}
	server = netip.AddrPortFrom(server.Addr().Unmap(), server.Port())
	if v, ok := e.NullRouted(server); ok {
		if plug, ok := blackhole(ln); ok {
			m.ready()
			return m.serveNullRoute(ctx, ln, plug, server, v)
		}
	}
	m.ready()

	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var conns sync.WaitGroup
	defer conns.Wait()
	defer cancel() // before conns.Wait: end the flows
	for {
		c, err := ln.Accept()
		if err != nil {
			_ = ln.Close()
			m.mu.Lock()
			closed := m.closed
			m.mu.Unlock()
			switch {
			case closed:
				return ErrMiddleboxClosed
			case ctx.Err() != nil:
				return nil
			}
			return fmt.Errorf("serve: accept: %w", err)
		}
		if !m.track(c) {
			_ = c.Close()
			continue
		}
		conns.Go(func() {
			defer m.untrack(c)
			m.handle(ctx, e, server, c)
		})
	}
}

func (m *Middlebox) ready() {
	if m.Ready != nil {
		m.Ready()
	}
}

// serveNullRoute serves a listener whose upstream is null-routed and
// whose SYNs blackhole drops: it logs the block once and accepts nothing
// until ctx is done or Close is called.
func (m *Middlebox) serveNullRoute(ctx context.Context, ln net.Listener, plug net.Conn, server netip.AddrPort, v Verdict) error {
	m.writeLog(LogEntry{
		Time: m.clock().Now().UTC(), Server: server.String(), Rule: v.Rule, Action: v.Action,
		Evidence: v.Evidence + "; connections to " + ln.Addr().String() + " never open",
	})
	<-ctx.Done()
	_ = ln.Close()
	if plug != nil {
		_ = plug.Close()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrMiddleboxClosed
	}
	return nil
}

// Close stops every Serve, closes every connection, waits for them and
// closes the middlebox's own engine. It is idempotent.
func (m *Middlebox) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		m.wg.Wait()
		return nil
	}
	m.closed = true
	for _, cancel := range m.cancels {
		cancel()
	}
	for c := range m.conns {
		_ = c.Close()
	}
	e, owned := m.engine, m.owned
	m.mu.Unlock()
	m.wg.Wait()
	if owned && e != nil {
		return e.Close()
	}
	return nil
}

func (m *Middlebox) track(c net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.conns[c] = struct{}{}
	return true
}

func (m *Middlebox) untrack(c net.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.conns, c)
}

// addrPort returns a net.Addr's IP and port.
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// reset closes c with an RST when it is TCP.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// closeWrite half-closes c when it can, and closes it otherwise.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// flowRun is the state of one forwarded flow shared by its two
// directions.
type flowRun struct {
	m       *Middlebox
	e       *Engine
	ctx     context.Context
	c, s    net.Conn
	flow    *Flow
	verdict atomic.Pointer[Verdict]

	mu       sync.Mutex // mu protects the fields below
	records  []Record
	nUp      int
	nDown    int
	tls      tlsWatch
	watching bool    // a record-shape rule waits for more TLS records
	final    Verdict // the latest verdict other than pass
	up       *bucket
	down     *bucket
}

// record notes the bytes b read from direction d: the read, and the TLS
// records they complete. While a record-shape rule watches the flow, it
// asks the engine about the new records and applies its verdict.
func (r *flowRun) record(d Direction, b []byte) {
	r.mu.Lock()
	at := r.m.clock().Now().Sub(r.flow.Start)
	cnt := &r.nUp
	if d == Down {
		cnt = &r.nDown
	}
	if *cnt < MaxRecords {
		*cnt++
		r.records = append(r.records, Record{Dir: d, Size: len(b), At: at})
	}
	defer r.mu.Unlock()
	if !r.tls.add(d, b, at) || !r.watching {
		return
	}
	// Under r.mu, so that the two directions' verdicts apply in order.
	v, done := r.e.Observe(*r.verdict.Load(), r.tls.snapshot(r.flow))
	r.watching = !done
	r.setVerdictLocked(v)
}

// recorded reports whether the middlebox has seen all it keeps of
// direction d, so that it may splice it.
func (r *flowRun) recorded(d Direction) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watching {
		return false
	}
	if d == Up {
		return r.nUp >= MaxRecords
	}
	return r.nDown >= MaxRecords
}

// setVerdict records a verdict for the flow and the log.
func (r *flowRun) setVerdict(v Verdict) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setVerdictLocked(v)
}

// setVerdictLocked is setVerdict with r.mu held.
func (r *flowRun) setVerdictLocked(v Verdict) {
	if v.Action != Pass || r.final.Action == "" {
		r.final = v
	}
	if v.Action == Throttle && r.up == nil {
		r.up = newBucket(r.m.clock(), v.RateBPS, v.Burst)
		r.down = newBucket(r.m.clock(), v.RateBPS, v.Burst)
	}
	r.verdict.Store(&v)
}

// handle runs one flow.
func (m *Middlebox) handle(ctx context.Context, e *Engine, server netip.AddrPort, c net.Conn) {
	clock := m.clock()
	client := addrPort(c.RemoteAddr())
	r := &flowRun{m: m, e: e, ctx: ctx, c: c}
	r.flow = &Flow{Client: client, Start: clock.Now()}
	defer func() { m.finish(r) }()
	defer c.Close()
	stopC := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stopC()

	dial := m.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	r.flow.Server = server
	if v := e.Admit(client.Addr(), r.flow.Server); v.Action != Pass {
		r.setVerdict(v)
		if v.Action == Reset {
			reset(c)
		} else {
			r.sink()
		}
		return
	}
	s, err := dial(ctx, "tcp", m.Upstream)
	if err != nil {
		r.setVerdict(Verdict{Rule: "upstream", Action: Reset, Evidence: fmt.Sprintf("dial upstream: %v", err)})
		reset(c)
		return
	}
	if !m.track(s) {
		_ = s.Close()
		return
	}
	defer m.untrack(s)
	defer s.Close()
	r.s = s
	stopS := context.AfterFunc(ctx, func() { _ = s.Close() })
	defer stopS()

	var down sync.WaitGroup
	down.Go(r.copyDown)
	defer down.Wait()

	first, clientDone, v := r.inspectFirst()
	switch v.Action {
	case Reset:
		reset(c)
		reset(s)
		return
	case Drop:
		if !clientDone {
			r.sink()
		}
		_ = s.Close() // the client gave up: the flow is over
		return
	}
	if len(first) > 0 && !r.forward(Up, s, first) {
		return
	}
	if !clientDone {
		r.copyUp()
	}
	if r.verdict.Load().Action == Reset {
		return
	}
	closeWrite(s)
}

// inspectFirst reads the first client payload and puts the flow under
// the engine's verdict on it. clientDone reports that the client's side
// has ended.
func (r *flowRun) inspectFirst() (first []byte, clientDone bool, v Verdict) {
	first, clientDone = r.m.readFirst(r.c)
	v = passVerdict
	if len(first) > 0 {
		r.flow.setFirst(first)
		r.record(Up, first)
		v = r.e.Inspect(r.flow)
	} else {
		r.flow.Kind = KindNone
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setVerdictLocked(v)
	r.watching = len(v.watch) > 0
	return first, clientDone, v
}

// readFirst reads the first client payload: one read, and more while it
// is the start of a TLS ClientHello that needs more bytes, for at most
// HelloTimeout each. done reports that the client's side has ended.
func (m *Middlebox) readFirst(c net.Conn) (first []byte, done bool) {
	buf := make([]byte, MaxFirst)
	n, err := c.Read(buf)
	if err != nil {
		return buf[:n], true
	}
	if Classify(buf[:n]) != KindTLS {
		return buf[:n], false
	}
	defer c.SetReadDeadline(time.Time{})
	for n < len(buf) {
		if _, perr := ParseClientHello(buf[:n]); !IsShortHello(perr) {
			break
		}
		_ = c.SetReadDeadline(time.Now().Add(m.helloTimeout()))
		k, err := c.Read(buf[n:])
		n += k
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			return buf[:n], true
		}
	}
	return buf[:n], false
}

// sink reads and discards the client's bytes until it closes: the client
// sees its packets vanish.
func (r *flowRun) sink() {
	_, _ = io.Copy(io.Discard, r.c)
}

// forward writes b to dst after the throttle and the outage check; false
// means the flow was cut.
func (r *flowRun) forward(d Direction, dst net.Conn, b []byte) bool {
	v := r.verdict.Load()
	if v != nil && len(v.outages) > 0 {
		if dv, ok := r.e.Disrupt(*v); ok {
			r.setVerdict(dv)
			v = &dv
		}
	}
	switch {
	case v == nil:
	case v.Action == Reset:
		reset(r.c)
		reset(r.s)
		return false
	case v.Action == Drop && d == Up: // the client's bytes vanish from now on
		r.sink()
		return false
	}
	r.mu.Lock()
	bk := r.up
	if d == Down {
		bk = r.down
	}
	r.mu.Unlock()
	for len(b) > 0 {
		chunk := b
		if bk != nil && len(chunk) > int(bk.burst) {
			chunk = chunk[:int(bk.burst)]
		}
		if bk != nil {
			if err := bk.wait(r.ctx, len(chunk)); err != nil {
				return false
			}
		}
		n, err := dst.Write(chunk)
		r.mu.Lock()
		if d == Up {
			r.flow.BytesUp += int64(n)
		} else {
			r.flow.BytesDown += int64(n)
		}
		r.mu.Unlock()
		if err != nil {
			return false
		}
		b = b[len(chunk):]
	}
	return true
}

// plain reports whether the flow may be spliced from now on: it passed,
// with no throttle and no outage to watch.
func (r *flowRun) plain() bool {
	v := r.verdict.Load()
	return v != nil && v.Action == Pass && len(v.outages) == 0 && len(v.watch) == 0
}

// copyUp forwards the client's bytes after the first payload.
func (r *flowRun) copyUp() {
	buf := make([]byte, 32<<10)
	for {
		if r.plain() && r.recorded(Up) {
			n, _ := io.Copy(r.s, r.c)
			r.mu.Lock()
			r.flow.BytesUp += n
			r.mu.Unlock()
			return
		}
		n, err := r.c.Read(buf)
		if n > 0 {
			r.record(Up, buf[:n])
			if !r.forward(Up, r.s, buf[:n]) {
				return
			}
		}
		if err != nil {
			if isReset(err) {
				reset(r.s)
			}
			return
		}
	}
}

// copyDown forwards the server's bytes, from the start of the flow.
func (r *flowRun) copyDown() {
	buf := make([]byte, 32<<10)
	for {
		if r.plain() && r.recorded(Down) {
			n, err := io.Copy(r.c, r.s)
			r.mu.Lock()
			r.flow.BytesDown += n
			r.mu.Unlock()
			r.serverEnd(err)
			return
		}
		n, err := r.s.Read(buf)
		if n > 0 {
			r.record(Down, buf[:n])
			if v := r.verdict.Load(); v != nil && v.Action == Reset {
				return
			}
			if !r.forward(Down, r.c, buf[:n]) {
				return
			}
		}
		if err != nil {
			r.serverEnd(err)
			return
		}
	}
}

// serverEnd records how the server's side ended and passes it on.
func (r *flowRun) serverEnd(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err == nil || errors.Is(err, io.EOF):
		r.flow.ServerClose = "FIN"
		r.flow.ServerCloseAfter = r.m.clock().Now().Sub(r.flow.Start)
		closeWrite(r.c)
	case isReset(err):
		r.flow.ServerClose = "RST"
		r.flow.ServerCloseAfter = r.m.clock().Now().Sub(r.flow.Start)
		reset(r.c)
	default:
		r.flow.ServerClose = "open"
	}
}

// isReset reports whether err means the peer reset the connection
// (ECONNRESET, or EPIPE from a write after the reset).
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// finish logs the flow.
func (m *Middlebox) finish(r *flowRun) {
	r.mu.Lock()
	f := r.flow
	f.Records = r.records
	f.TLS = r.tls.recs
	f.Duration = m.clock().Now().Sub(f.Start)
	if f.ServerClose == "" {
		f.ServerClose = "open"
	}
	v := r.final
	if v.Action == "" {
		v = passVerdict
	}
	r.mu.Unlock()
	if m.OnFlow != nil {
		m.OnFlow(f, v)
	}
	ent := LogEntry{
		Time: f.Start.UTC(), Client: f.Client.String(), Server: f.Server.String(),
		Kind: f.Kind, Host: f.Host, JA4: f.JA4(),
		Rule: v.Rule, Action: v.Action, Evidence: v.Evidence,
		BytesUp: f.BytesUp, BytesDown: f.BytesDown,
		ServerClose: f.ServerClose, ServerCloseMS: ms(f.ServerCloseAfter), DurationMS: ms(f.Duration),
	}
	if r.s == nil {
		ent.ServerClose = ""
	}
	m.writeLog(ent)
}

// ms returns d in milliseconds.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// logBlock logs a server blocked by the engine outside any flow.
func (m *Middlebox) logBlock(server netip.AddrPort, v Verdict) {
	m.writeLog(LogEntry{Time: m.clock().Now().UTC(), Server: server.String(), Rule: v.Rule, Action: v.Action, Evidence: v.Evidence})
}

func (m *Middlebox) writeLog(ent LogEntry) {
	if m.Log == nil {
		return
	}
	b, err := json.Marshal(ent)
	if err != nil {
		return
	}
	b = append(b, '\n')
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.Log.Write(b); err != nil && m.Logger != nil {
		m.Logger.Warn("censor: write log", "err", err)
	}
}
