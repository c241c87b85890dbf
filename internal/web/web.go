// Package web is the Ferry app: a web interface to the client library
// that the client itself serves on this device (ferry web), for people who
// do not live in a terminal. It serves plain files embedded in the binary
// (static/, no build step, nothing loaded from elsewhere) and a small JSON
// API over one ferry.Client, and it pushes what the client's Sync reports
// to the page as server-sent events.
//
// Security model (docs/app.md section 2): the server listens on a
// loopback address only; every run has a random 256-bit token, given in
// the URL printed at start and exchanged at the first request for a
// cookie named after the port (HttpOnly, SameSite=Strict); every request
// must carry it; the Host header must name the loopback address and port
// the server listens on (no DNS rebinding); a request whose Origin or
// Sec-Fetch-Site says it comes from another origin is refused, and every
// request that changes something must say it comes from this origin; and
// every answer carries a strict Content-Security-Policy that lets the
// page load and connect to nothing but this server.
//
// It is not the client library and keeps no state of its own beyond the
// token and the last connection status: everything is in the profile, so
// the command line can use the same profile at the same time.
package web

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ferry-im/ferry"
)

//go:embed static
var staticFS embed.FS

// CSP is the Content-Security-Policy of every answer: scripts, styles,
// images, media and connections from this server only (images and media
// also from blob: URLs the page makes from downloaded files), no frames,
// no plugins, forms only to this server.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; " +
	"connect-src 'self'; manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Config configures a Server. Profile.Home is required; the zero value of
// every other field works.
type Config struct {
	// Profile is the client configuration: the profile is opened with
	// it, or made with it by the onboarding.
	Profile ferry.Config
	// Relay, if set, is the relay link the onboarding suggests.
	Relay string
	// Rand is the source of the token. If nil, crypto/rand is used.
	Rand io.Reader
	// Logger receives the server's events; never tokens, keys or message
	// text. If nil, nothing is logged.
	Logger *slog.Logger
	// Poll is how often the server looks for changes made by other
	// processes and for messages whose timer ran out. If zero, 1 s.
	Poll time.Duration
	// Wait is how long one Sync stays connected before it is started
	// again. If zero, an hour.
	Wait time.Duration
}

// Server is the app's web server over one profile.
type Server struct {
	cfg   Config
	token string
	log   *slog.Logger
	hub   *hub

	mu     sync.Mutex // mu protects client, status and started
	client *ferry.Client
	status statusJSON
	// started is closed when the client exists (opened, or made by the
	// onboarding).
	started chan struct{}
}

// New opens the profile in cfg.Profile.Home, or prepares the onboarding
// if there is none, and makes the run's token.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tok := make([]byte, 32)
	if _, err := io.ReadFull(cfg.Rand, tok); err != nil {
		return nil, fmt.Errorf("make token: %w", err)
	}
	s := &Server{cfg: cfg, token: base64.RawURLEncoding.EncodeToString(tok), log: cfg.Logger, hub: newHub(), started: make(chan struct{})}
	c, err := ferry.Open(ctx, cfg.Profile)
	switch {
	case errors.Is(err, ferry.ErrNoProfile):
		// The onboarding makes it.
	case err != nil:
		return nil, err
	default:
		s.setClient(c)
	}
	return s, nil
}

// Token returns the run's token.
func (s *Server) Token() string { return s.token }

// URL returns the address a browser opens for a server listening at
// addr: it carries the token.
func (s *Server) URL(addr net.Addr) string {
	return "http://" + addr.String() + "/?t=" + s.token
}

func (s *Server) setClient(c *ferry.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client = c
	close(s.started)
}

// clientOrNil returns the client, or nil before the onboarding.
func (s *Server) clientOrNil() *ferry.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client
}

// Serve serves the app on l, which must be a loopback listener, and
// keeps the profile in sync with its relay, until ctx ends; then it stops
// serving, waits for its goroutines and closes the profile. It does not
// close l before ctx ends.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ap, ok := l.Addr().(*net.TCPAddr)
	if !ok || !ap.IP.IsLoopback() {
		return fmt.Errorf("serve the app on %v: not a loopback address", l.Addr())
	}
	hs := &http.Server{Handler: s.Handler(ap.Port), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		s.hub.close()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	})
	g.Go(func() error { return s.syncLoop(gctx) })
	g.Go(func() error { return s.pollLoop(gctx) })
	err := g.Wait()
	if c := s.clientOrNil(); c != nil {
		c.Close()
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Handler returns the app's handler for a server listening on port.
func (s *Server) Handler(port int) http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	files := http.FileServerFS(static)
	mux.Handle("GET /", files)
	s.routes(mux)
	return &guard{s: s, port: strconv.Itoa(port), next: mux}
}

// guard enforces the security model on every request.
type guard struct {
	s    *Server
	port string
	next http.Handler
}

// cookieName is the token cookie's name: one per port, since cookies are
// shared by every port of a host.
func (g *guard) cookieName() string { return "ferry_" + g.port }

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(self), microphone=(self), geolocation=(), payment=(), usb=()")
	h.Set("Cache-Control", "no-store")
	if why := g.refuse(r); why != "" {
		g.s.log.Info("refused a request", "why", why, "method", r.Method)
		http.Error(w, "Forbidden: "+why, http.StatusForbidden)
		return
	}
	if t := r.URL.Query().Get("t"); t != "" && r.Method == http.MethodGet && r.URL.Path == "/" {
		// The first request: the token in the URL becomes a cookie, and
		// the URL loses it (history, screenshots, the Referer).
		http.SetCookie(w, &http.Cookie{Name: g.cookieName(), Value: t, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	g.next.ServeHTTP(w, r)
}

// refuse says why a request is refused, or "" to let it through.
func (g *guard) refuse(r *http.Request) string {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil || port != g.port || !loopbackName(host) {
		return "this address is not the Ferry app's"
	}
	origin := r.Header.Get("Origin")
	if origin != "" && origin != "http://"+r.Host {
		return "a request from another site"
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return "a request from another site"
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && origin == "" {
		return "a change without its origin"
	}
	if !g.tokenOK(r) {
		return "no valid token; open the address ferry web printed"
	}
	return ""
}

func (g *guard) tokenOK(r *http.Request) bool {
	got := ""
	if c, err := r.Cookie(g.cookieName()); err == nil {
		got = c.Value
	}
	if t := r.URL.Query().Get("t"); t != "" && r.URL.Path == "/" {
		got = t
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(g.s.token)) == 1
}

// loopbackName reports whether host names this device only: a loopback
// IP literal or localhost. Any other name could be rebound to 127.0.0.1
// by a site's DNS.
func loopbackName(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
