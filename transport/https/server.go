package https

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
)

// The relay's net/http settings: those of a careful operator's Go HTTPS
// server. A stock server with the same settings is the reference the
// probe tests compare the relay with.
const (
	ReadHeaderTimeout = 30 * time.Second
	IdleTimeout       = 3 * time.Minute
)

// NewHTTPServer returns the http.Server the relay serves its website and
// tunnels with: handler, TLS config (nil in cleartext mode), the timeouts
// above, and net/http's own error log silenced. It is exported so that
// tests and operators can run the same server without Ferry.
func NewHTTPServer(handler http.Handler, tlsConfig *tls.Config) *http.Server {
	return &http.Server{
		Handler:           handler,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
}

// ServerConfig configures the relay side. Secret and, unless Cleartext,
// TLS are required; the zero value of every other field works.
type ServerConfig struct {
	// Secret is the relay's https secret; clients have it from the link.
	Secret Secret
	// TLS holds the certificate (Certificates or GetCertificate). The
	// server adds the ALPN protocols h2 and http/1.1, as net/http does.
	TLS *tls.Config
	// Cleartext makes the listener speak HTTP/1.1 and HTTP/2 without TLS
	// (h2c, prior knowledge), for a TLS-terminating reverse proxy in front
	// of the relay (nginx, Caddy, a CDN). TLS is then ignored.
	Cleartext bool
	// Site is the website everyone without the secret gets. If nil,
	// BuiltinSite().
	Site http.Handler
	// SNI is the server name written in the link. If empty, the host of
	// the address given to Endpoint.
	SNI string
	// Pin, if not nil, is written in the link (the certificate is
	// self-signed; see Pin).
	Pin []byte
	// MaxClockSkew is how far a proof's time may be from Now. If zero,
	// DefaultMaxClockSkew.
	MaxClockSkew time.Duration
	// ReplayCapacity bounds the proofs remembered against replay. If zero,
	// DefaultReplayCapacity.
	ReplayCapacity int
	// Now is the relay's clock. If nil, time.Now.
	Now func() time.Time
	// Rand seeds the padding of each tunnel. If nil, crypto/rand.
	Rand io.Reader
	// Logger gets one debug line per tunnel opened. If nil, nothing is
	// logged. Secrets and proofs are never logged.
	Logger *slog.Logger
}

// Server is the relay side of the https transport: a website that turns a
// request with a valid proof into a tunnel. It is safe for concurrent use.
type Server struct {
	cfg    ServerConfig
	keys   keys
	replay *replayFilter
	site   http.Handler
	randMu sync.Mutex // randMu serialises reads of cfg.Rand

	unshaped bool // tests only: no padding of the first frames
}

// NewServer returns a server for cfg.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Secret == (Secret{}) {
		return nil, errors.New("https server: no secret")
	}
	if !cfg.Cleartext && (cfg.TLS == nil || len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil && cfg.TLS.GetConfigForClient == nil) {
		return nil, errors.New("https server: no certificate (give one, or use Cleartext behind a TLS proxy)")
	}
	capacity := cfg.ReplayCapacity
	if capacity <= 0 {
		capacity = DefaultReplayCapacity
	}
	site := cfg.Site
	if site == nil {
		site = BuiltinSite()
	}
	return &Server{cfg: cfg, keys: deriveKeys(cfg.Secret), replay: newReplayFilter(capacity), site: site}, nil
}

var _ transport.Server = (*Server)(nil)

// Endpoint returns the link endpoint through which clients reach this
// server at addr: the server name (SNI, or addr's host), the pin if the
// certificate is pinned, and the secret.
func (s *Server) Endpoint(addr string) link.Endpoint {
	ep := link.Endpoint{Transport: Name, Addr: addr}
	sni := s.cfg.SNI
	if sni == "" {
		sni, _, _ = net.SplitHostPort(addr)
	}
	if sni != "" && net.ParseIP(sni) == nil { // no SNI for an IP address, as in Chromium
		ep.Params = append(ep.Params, link.Param{Key: ParamSNI, Value: sni})
	}
	if s.cfg.Pin != nil {
		ep.Params = append(ep.Params, link.Param{Key: ParamPin, Value: b64.EncodeToString(s.cfg.Pin)})
	}
	ep.Params = append(ep.Params, link.Param{Key: ParamKey, Value: s.cfg.Secret.String()})
	return ep
}

// Path is the secret path of the upgrade request, for a reverse proxy's
// configuration (docs/transports.md section 4.6). It is not secret from
// the proxy, and useless without the secret.
func (s *Server) Path() string { return s.keys.path }

func (s *Server) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

func (s *Server) skew() time.Duration {
	if s.cfg.MaxClockSkew > 0 {
		return s.cfg.MaxClockSkew
	}
	return DefaultMaxClockSkew
}

func (s *Server) seed() ([32]byte, error) {
	var b [32]byte
	if s.cfg.Rand == nil {
		_, err := rand.Read(b[:])
		return b, err
	}
	s.randMu.Lock()
	defer s.randMu.Unlock()
	_, err := io.ReadFull(s.cfg.Rand, b[:])
	return b, err
}

// authorized reports whether r is an upgrade request with a fresh, valid
// proof. Every other request, including a replay, is the website's.
func (s *Server) authorized(r *http.Request) bool {
	if r.URL.Path != s.keys.path || r.Method != http.MethodGet {
		return false
	}
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return false
	}
	p, err := ParseProof(ck.Value)
	if err != nil {
		return false
	}
	now := s.now()
	if err := s.keys.check(p, now, s.skew()); err != nil {
		return false
	}
	return s.replay.add(p.Nonce, time.Unix(p.Time, 0).Add(s.skew()), now) == nil
}

// Listener serves the website and the tunnel on the raw connections of l
// (TLS, or cleartext HTTP behind a proxy) and returns a listener whose
// Accept yields the tunnels. Each raw connection is served on its own
// goroutine, so one that stalls never delays another.
//
// Closing the returned listener closes l and the idle HTTP connections,
// makes Accept return net.ErrClosed, and waits for the goroutines that
// serve l and every request not handed over as a tunnel. Tunnels already
// accepted keep working until closed; their HTTP connections end then.
func (s *Server) Listener(l net.Listener) net.Listener {
	ln := &listener{s: s, raw: l, conns: make(chan net.Conn), done: make(chan struct{}), setup: make(map[net.Conn]struct{})}
	ln.hs = NewHTTPServer(ln, nil)
	if s.cfg.Cleartext {
		ln.hs.Protocols = new(http.Protocols)
		ln.hs.Protocols.SetHTTP1(true)
		ln.hs.Protocols.SetUnencryptedHTTP2(true)
		ln.wg.Go(func() { ln.hs.Serve(l) })
		return ln
	}
	// TLS is the relay's (fast.go); net/http gets the decrypted
	// connections that are not tunnels.
	ln.tlsConfig = s.cfg.TLS.Clone()
	ln.tlsConfig.NextProtos = append([]string{"h2", "http/1.1"}, ln.tlsConfig.NextProtos...)
	ln.handover = newChanListener(l.Addr())
	ln.hs.Protocols = new(http.Protocols)
	ln.hs.Protocols.SetHTTP1(true)
	ln.hs.Protocols.SetUnencryptedHTTP2(true)
	ln.wg.Go(func() { ln.hs.Serve(ln.handover) })
	ln.wg.Go(func() { ln.acceptRaw(l) })
	return ln
}

// listener is the net.Listener of Server.Listener, and the http.Handler
// of its HTTP server.
type listener struct {
	s     *Server
	raw   net.Listener
	hs    *http.Server
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup // the HTTP server and requests not handed over

	mu      sync.Mutex // mu protects closing and setup; wg.Add never races wg.Wait
	closing bool
	setup   map[net.Conn]struct{} // raw conns in their handshake or first flight

	tlsConfig *tls.Config   // nil in cleartext mode
	handover  *chanListener // what net/http serves in TLS mode
}

func (ln *listener) Accept() (net.Conn, error) {
	select {
	case c := <-ln.conns:
		return c, nil
	case <-ln.done:
		return nil, net.ErrClosed
	}
}

func (ln *listener) Addr() net.Addr { return ln.raw.Addr() }

func (ln *listener) Close() error {
	ln.once.Do(func() {
		ln.mu.Lock()
		ln.closing = true
		for c := range ln.setup {
			c.Close()
		}
		ln.mu.Unlock()
		close(ln.done)
		ln.raw.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // one pass: close the listener and idle connections
		ln.hs.Shutdown(ctx)
	})
	ln.wg.Wait()
	return nil
}

func (ln *listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ln.mu.Lock()
	if ln.closing {
		ln.mu.Unlock()
		ln.s.site.ServeHTTP(w, r)
		return
	}
	ln.wg.Add(1)
	ln.mu.Unlock()
	handedOver := false
	defer func() {
		if !handedOver {
			ln.wg.Done()
		}
	}()
	if !ln.s.authorized(r) {
		ln.s.site.ServeHTTP(w, r)
		return
	}
	handedOver = ln.tunnel(w, r)
}

// tunnel answers an authorized request and hands the tunnel to Accept. It
// returns once the tunnel is closed, reporting whether it was handed
// over (the WaitGroup is then released at the hand-over).
func (ln *listener) tunnel(w http.ResponseWriter, r *http.Request) bool {
	rc := http.NewResponseController(w)
	rc.EnableFullDuplex() // HTTP/1.1 behind a proxy; HTTP/2 always is
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if rc.Flush() != nil {
		return false
	}
	seed, err := ln.s.seed()
	if err != nil {
		return false
	}
	var laddr net.Addr = ln.raw.Addr()
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		laddr = a
	}
	pieces := seed
	pieces[0] ^= 1 // a stream of its own for the piece sizes
	sc := newServerConn(w, r, laddr, pieces)
	shaped := newShapedConn(sc, false, seed, frames(ln.s.unshaped))
	if shaped.writePage() != nil {
		return false
	}
	select {
	case ln.conns <- shaped:
	case <-ln.done:
		return false
	case <-r.Context().Done():
		return false
	}
	if l := ln.s.cfg.Logger; l != nil {
		l.Debug("https tunnel opened", "remote", r.RemoteAddr, "proto", r.Proto)
	}
	ln.wg.Done()
	sc.pump(r)
	return true
}
