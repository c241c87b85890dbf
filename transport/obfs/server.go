package obfs

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
)

// Bounds of the time a relay holds a connection that fails the handshake
// (docs/transports.md section 4.6): the timeout is drawn once per relay,
// from its key, in [minHold, minHold+holdSpread), and each connection adds
// a jitter in [0, maxJitter).
const (
	minHold    = 40 * time.Second
	holdSpread = 60 * time.Second
	maxJitter  = 2 * time.Second
	// DefaultReplayEntries bounds the replay filter when
	// ServerConfig.ReplayEntries is 0.
	DefaultReplayEntries = 1 << 18
	// DefaultMaxPending is ServerConfig.MaxPending's default.
	DefaultMaxPending = 1 << 14
	// replayWindow is how long a client hello's mark is remembered: its
	// epoch hour is accepted for up to about two hours, plus clock skew.
	replayWindow = 3 * time.Hour
)

// ServerConfig configures the relay half. Key is required; the zero value
// of every other field works.
type ServerConfig struct {
	// Key is the relay's obfs key; its public half goes in the link.
	Key PrivateKey
	// Shape is the first-packet shape the link asks clients for ("p6" to
	// "p16", "lo", "hi"). If empty, one derived from the key. The server
	// accepts every shape whatever this says.
	Shape string
	// Hold is how long a connection that has not completed the handshake
	// (garbage, a replay, a failed MAC, a stall) is read from, counted
	// from its accept, before the server closes it; each connection adds
	// a jitter of up to a twentieth of Hold (at most 2 s). If zero, a
	// value drawn from the key in [40 s, 100 s).
	Hold time.Duration
	// ReplayEntries bounds the replay filter; if zero,
	// DefaultReplayEntries.
	ReplayEntries int
	// MaxPending bounds the connections a listener holds in the handshake
	// or after failing it; past it, the oldest is closed before its time
	// (a flood of probes costs a goroutine and a socket each). If zero,
	// DefaultMaxPending.
	MaxPending int
	// Rand supplies ephemeral keys, padding and jitter; if nil,
	// crypto/rand.Reader.
	Rand io.Reader
	// Now gives the time for the handshake's epoch hour and the replay
	// filter; if nil, time.Now.
	Now func() time.Time
	// Logger receives a debug line per failed handshake (no bytes of
	// it). If nil, nothing is logged.
	Logger *slog.Logger
}

// Server is the relay half of obfs. It is safe for concurrent use; its
// replay filter is shared by all its listeners.
type Server struct {
	cfg    ServerConfig
	static *keyPair
	shape  shape
	hold   time.Duration
	replay *replayFilter
}

var _ transport.Server = (*Server)(nil)

// NewServer returns a server for cfg.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Key.k == nil {
		return nil, errors.New("new obfs server: no key")
	}
	pub := cfg.Key.PublicKey()
	s := &Server{cfg: cfg, shape: shapeFor(pub), hold: cfg.Hold}
	s.static = &keyPair{priv: cfg.Key.k}
	copy(s.static.pub[:], pub)
	if cfg.Shape != "" {
		sh, err := parseShape(cfg.Shape)
		if err != nil {
			return nil, fmt.Errorf("new obfs server: %w", err)
		}
		s.shape = sh
	}
	if s.hold <= 0 {
		h := sha256.Sum256(append([]byte("ferry-obfs-1 hold"), pub...))
		s.hold = minHold + time.Duration(binary.BigEndian.Uint64(h[:])%uint64(holdSpread))
	}
	s.replay = newReplayFilter(cmp(cfg.ReplayEntries, DefaultReplayEntries))
	return s, nil
}

func cmp(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

func (s *Server) rand() io.Reader {
	if s.cfg.Rand != nil {
		return s.cfg.Rand
	}
	return rand.Reader
}

func (s *Server) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

// Endpoint returns obfs=addr,key=KEY,fet=SHAPE.
func (s *Server) Endpoint(addr string) link.Endpoint {
	return link.Endpoint{Transport: Name, Addr: addr, Params: []link.Param{
		{Key: ParamKey, Value: base64.RawURLEncoding.EncodeToString(s.static.pub[:])},
		{Key: ParamShape, Value: s.shape.String()},
	}}
}

// holdFor returns how long the conn accepted now is held if it fails.
func (s *Server) holdFor() time.Duration {
	j := min(s.hold/20, maxJitter)
	if j <= 0 {
		return s.hold
	}
	n, err := randIntn(s.rand(), int(j/time.Microsecond)+1)
	if err != nil {
		return s.hold
	}
	return s.hold + time.Duration(n)*time.Microsecond
}

// Listener returns a listener of obfs conns over l.
func (s *Server) Listener(l net.Listener) net.Listener {
	ln := &listener{
		raw:    l,
		srv:    s,
		conns:  make(chan net.Conn),
		done:   make(chan struct{}),
		failed: make(chan struct{}),
		active: make(map[net.Conn]struct{}),
	}
	ln.wg.Go(ln.acceptLoop)
	return ln
}

type listener struct {
	raw    net.Listener
	srv    *Server
	conns  chan net.Conn // handshaken conns for Accept
	done   chan struct{} // closed by Close
	failed chan struct{} // closed when the raw listener fails; err says why
	err    error
	once   sync.Once
	wg     sync.WaitGroup

	mu     sync.Mutex // mu protects active and queue
	active map[net.Conn]struct{}
	queue  []net.Conn // active conns in accept order, and some gone since
}

func (l *listener) Addr() net.Addr { return l.raw.Addr() }

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, fmt.Errorf("accept obfs: %w", net.ErrClosed)
	case <-l.failed:
		return nil, fmt.Errorf("accept obfs: %w", l.err)
	}
}

// Close closes the raw listener and every conn still in its handshake or
// held after failing it, and waits for their goroutines.
func (l *listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.raw.Close()
		l.mu.Lock()
		for c := range l.active {
			c.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return err
}

func (l *listener) acceptLoop() {
	backoff := 5 * time.Millisecond
	for {
		raw, err := l.raw.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			l.err = err
			close(l.failed)
			return
		}
		backoff = 5 * time.Millisecond
		if !l.track(raw) {
			raw.Close()
			return
		}
		l.wg.Go(func() { l.serve(raw) })
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// track records raw as in handshake; false if the listener is closed.
func (l *listener) track(raw net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		return false
	default:
	}
	l.active[raw] = struct{}{}
	l.queue = append(l.queue, raw)
	for len(l.active) > cmp(l.srv.cfg.MaxPending, DefaultMaxPending) {
		old := l.queue[0]
		l.queue = l.queue[1:]
		if _, ok := l.active[old]; ok {
			delete(l.active, old)
			old.Close()
		}
	}
	if len(l.queue) > 2*len(l.active)+64 {
		l.queue = slices.DeleteFunc(l.queue, func(c net.Conn) bool { _, ok := l.active[c]; return !ok })
	}
	return true
}

func (l *listener) untrack(raw net.Conn) {
	l.mu.Lock()
	delete(l.active, raw)
	l.mu.Unlock()
}

// serve runs the handshake on raw and hands the conn to Accept, or holds
// raw until its time is up.
func (l *listener) serve(raw net.Conn) {
	defer l.untrack(raw)
	until := time.Now().Add(l.srv.holdFor())
	c, err := l.srv.handshake(raw, until)
	if err != nil {
		if l.srv.cfg.Logger != nil {
			l.srv.cfg.Logger.Debug("obfs handshake failed; holding the connection", "remote", raw.RemoteAddr().String(), "reason", err.Error())
		}
		hold(raw, until)
		return
	}
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// hold reads and discards from raw until the time is up or the peer
// closes, then closes raw.
func hold(raw net.Conn, until time.Time) {
	defer raw.Close()
	if err := raw.SetReadDeadline(until); err != nil {
		return
	}
	var buf [2048]byte
	for {
		if _, err := raw.Read(buf[:]); err != nil {
			return
		}
	}
}

// handshake reads a client hello from raw until the deadline and answers
// it. An error means raw is to be held.
func (s *Server) handshake(raw net.Conn, until time.Time) (*Conn, error) {
	if err := raw.SetReadDeadline(until); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, maxHello)
	for {
		n, err := raw.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		st, repr, mark := parseClientHello(buf, s.static.pub[:], s.now())
		switch {
		case st == helloBad:
			return nil, errors.New("not a client hello")
		case st == helloOK:
			if s.replay.seen(mark, s.now()) {
				return nil, errors.New("replayed client hello")
			}
			return s.answer(raw, buf, &repr)
		case err != nil:
			return nil, err
		}
	}
}

// answer sends the server hello for an authentic client hello.
func (s *Server) answer(raw net.Conn, hello []byte, repr *[reprLen]byte) (*Conn, error) {
	reply, keys, err := serverHandshake(s.rand(), s.static, hello, repr)
	if err != nil {
		return nil, err
	}
	raw.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := raw.Write(reply); err != nil {
		return nil, fmt.Errorf("send hello: %w", err)
	}
	raw.SetDeadline(time.Time{})
	var seed [32]byte
	if _, err := io.ReadFull(s.rand(), seed[:]); err != nil {
		return nil, fmt.Errorf("read randomness: %w", err)
	}
	return newConn(raw, keys.c2s, keys.s2c, seed, nil)
}

// replayFilter remembers the marks of client hellos for replayWindow,
// at most limit of them (the oldest are forgotten first).
type replayFilter struct {
	mu    sync.Mutex // mu protects the fields below
	limit int
	seenM map[[markLen]byte]time.Time
	queue []replayEntry // in insertion order
}

type replayEntry struct {
	mark    [markLen]byte
	expires time.Time
}

func newReplayFilter(limit int) *replayFilter {
	return &replayFilter{limit: limit, seenM: make(map[[markLen]byte]time.Time)}
}

// seen reports whether mark was seen within the window, and remembers it.
func (f *replayFilter) seen(mark []byte, now time.Time) bool {
	var k [markLen]byte
	copy(k[:], mark)
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.queue) > 0 && (len(f.queue) >= f.limit || !now.Before(f.queue[0].expires)) {
		old := f.queue[0]
		if exp, ok := f.seenM[old.mark]; ok && exp.Equal(old.expires) {
			delete(f.seenM, old.mark)
		}
		f.queue = f.queue[1:]
	}
	if exp, ok := f.seenM[k]; ok && now.Before(exp) {
		return true
	}
	e := replayEntry{mark: k, expires: now.Add(replayWindow)}
	f.seenM[k] = e.expires
	f.queue = append(f.queue, e)
	return false
}
