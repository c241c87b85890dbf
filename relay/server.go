package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-im/ferry/channel"
)

// Server is a relay. It serves connections handed to ServeConn and owns one
// background goroutine, the TTL sweeper. Create it with NewServer.
type Server struct {
	key     channel.KeyPair
	store   *timedStore // wraps Config.Store
	log     *slog.Logger
	now     func() time.Time
	rand    io.Reader
	limits  Limits
	metrics *metrics
	hub     hub
	cluster *cluster // nil for a relay alone

	keyLimit, addrLimit, handshakeLimit *limiter
	subscribeLimit, ackLimit            *limiter

	// readCtx ends on Shutdown: connections stop reading new frames.
	// workCtx ends on Close: handlers and deliveries in flight give up.
	readCtx, workCtx   context.Context
	stopRead, stopWork context.CancelFunc
	sweeperDone        chan struct{}
	reaperDone         chan struct{}
	started            time.Time // for conn.lastFrame
	nextConnID         atomic.Uint64
	conns              sync.WaitGroup // ServeConn calls in flight
	shutdownOnce       sync.Once
	closeOnce          sync.Once

	// mu protects closing, open and perAddr.
	mu      sync.Mutex
	closing bool
	open    map[*conn]struct{}
	perAddr map[string]int // connections being served, by addrKey
}

// NewServer returns a server for cfg and starts its sweeper. Call Close (or
// Shutdown) to stop it.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("new relay server: Config.Store is nil")
	}
	if cfg.Key.Public == ([32]byte{}) {
		return nil, errors.New("new relay server: Config.Key is not set")
	}
	if k, err := channel.NewKeyPair(cfg.Key.Private); err != nil || k.Public != cfg.Key.Public {
		return nil, errors.New("new relay server: Config.Key's public key does not belong to its private key")
	}
	now := cfg.now()
	lim := cfg.Limits.withDefaults()
	m := newMetrics()
	s := &Server{
		key:            cfg.Key,
		store:          newTimedStore(cfg.Store, m.storeTime),
		log:            cfg.logger(),
		now:            now,
		rand:           cfg.rand(),
		limits:         lim,
		metrics:        m,
		hub:            hub{subs: make(map[[16]byte][]*subscriber)},
		keyLimit:       newLimiter(lim.KeyRate, lim.KeyBurst, now),
		addrLimit:      newLimiter(lim.AddrRate, lim.AddrBurst, now),
		handshakeLimit: newLimiter(lim.HandshakeRate, lim.HandshakeBurst, now),
		subscribeLimit: newLimiter(lim.SubscribeRate, lim.SubscribeBurst, now),
		ackLimit:       newLimiter(lim.AckRate, lim.AckBurst, now),
		sweeperDone:    make(chan struct{}),
		reaperDone:     make(chan struct{}),
		started:        time.Now(),
		open:           make(map[*conn]struct{}),
		perAddr:        make(map[string]int),
	}
	s.readCtx, s.stopRead = context.WithCancel(context.Background())
	s.workCtx, s.stopWork = context.WithCancel(context.Background())
	if err := s.startCluster(cfg); err != nil {
		s.stopRead()
		s.stopWork()
		return nil, err
	}
	go s.sweeper()
	go s.reapIdle()
	return s, nil
}

// Registry returns the server's Prometheus registry, for a /metrics
// handler (promhttp.HandlerFor).
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// ServeConn serves one client connection until the client hangs up, the
// connection fails, ctx ends or the server shuts down: it runs the channel
// handshake as the relay, then reads frames and handles each. It closes
// nc before returning. A clean hang-up or a shutdown returns nil; a
// protocol violation or I/O failure returns an error saying what happened.
// After Shutdown or Close it closes nc at once and returns ErrClosed.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return ErrClosed
	}
	s.conns.Add(1)
	s.mu.Unlock()
	defer s.conns.Done()
	s.metrics.connsTotal.Inc()
	s.metrics.connsOpen.Inc()
	defer s.metrics.connsOpen.Dec()

	id := s.nextConnID.Add(1)
	log := s.log.With("conn", id)
	addr := addrKey(nc.RemoteAddr())
	if !s.countAddr(addr) {
		s.metrics.handshakes.WithLabelValues("too_many_conns").Inc()
		log.Debug("too many connections from one address")
		nc.Close()
		return errors.New("serve conn: too many connections from this address")
	}
	defer s.uncountAddr(addr)
	if !s.handshakeLimit.allow(addr) {
		s.metrics.handshakes.WithLabelValues("rate_limited").Inc()
		log.Debug("handshake rate limited")
		nc.Close()
		return errors.New("serve conn: too many handshakes from this address")
	}

	ch, err := s.handshake(ctx, nc, log)
	if err != nil {
		s.metrics.handshakes.WithLabelValues("failed").Inc()
		log.Debug("handshake failed", "err", err)
		nc.Close()
		return fmt.Errorf("serve conn: %w", err)
	}
	s.metrics.handshakes.WithLabelValues("ok").Inc()

	c := &conn{
		s:       s,
		ch:      ch,
		id:      id,
		log:     log,
		addr:    addr,
		mailbox: channel.MailboxID(ch.PeerKey()),
	}
	peer := ch.PeerKey()
	c.keyID = string(peer[:])
	defer c.setup(ctx)()
	if !s.track(c) {
		ch.Close()
		return ErrClosed
	}
	defer s.untrack(c)
	log.Debug("connection open")
	err = c.serve()
	if err != nil {
		log.Debug("connection closed", "err", err)
	} else {
		log.Debug("connection closed")
	}
	return err
}

// handshake runs the channel handshake on a goroutine of its own, so that
// the deep stack it needs is not kept, idle, by the connection's
// goroutine. It ends early on ctx, Shutdown or Close, or after
// HandshakeTimeout.
func (s *Server) handshake(ctx context.Context, nc net.Conn, log *slog.Logger) (*channel.Conn, error) {
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.readCtx, cancel)()
	if t := s.limits.HandshakeTimeout; t > 0 {
		var cancelTimeout context.CancelFunc
		hctx, cancelTimeout = context.WithTimeout(hctx, t)
		defer cancelTimeout()
	}
	type result struct {
		ch  *channel.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		ch, err := (&channel.Config{Rand: s.rand, Logger: log}).Server(hctx, nc, s.key)
		done <- result{ch, err}
	}()
	r := <-done
	return r.ch, r.err
}

// countAddr counts a connection from addr, or reports false if addr has
// ConnsPerAddr already.
func (s *Server) countAddr(addr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.limits.ConnsPerAddr; n > 0 && s.perAddr[addr] >= n {
		return false
	}
	s.perAddr[addr]++
	return true
}

func (s *Server) uncountAddr(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perAddr[addr]--; s.perAddr[addr] <= 0 {
		delete(s.perAddr, addr)
	}
}

// track registers c so Close can reach it; false once the server is closing.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.open[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.open, c)
}

// Shutdown stops the server gracefully: new connections are refused, open
// ones stop reading new frames, finish the frame they are handling (a Send
// being stored is stored and answered) and are closed. It returns when
// every connection is done, or calls Close and returns ctx's error if ctx
// ends first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		s.stopRead()
		for _, c := range s.openConns(nil) {
			c.cancelRead()
		}
	})
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
		return s.Close()
	case <-ctx.Done():
		s.Close()
		<-done
		return ctx.Err()
	}
}

// Close stops the server at once: connections are closed, handlers in
// flight are cancelled, and Close waits for every goroutine the server
// owns, the ServeConn calls in flight included. It does not close the
// Store. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		open := make([]*conn, 0, len(s.open))
		for c := range s.open {
			open = append(open, c)
		}
		s.mu.Unlock()
		s.stopRead()
		s.stopWork()
		for _, c := range open {
			c.ch.Close()
		}
	})
	s.conns.Wait()
	<-s.sweeperDone
	<-s.reaperDone
	s.stopCluster()
	return nil
}

// sweeper deletes expired envelopes and idle rate-limit buckets every
// SweepInterval until Close.
func (s *Server) sweeper() {
	defer close(s.sweeperDone)
	if s.limits.SweepInterval <= 0 {
		<-s.workCtx.Done()
		return
	}
	t := time.NewTicker(s.limits.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.workCtx.Done():
			return
		case <-t.C:
			s.Sweep(s.workCtx)
		}
	}
}

// Sweep runs one sweep now: it deletes envelopes older than the TTL and
// forgets idle rate-limit buckets. The sweeper calls it every
// SweepInterval; tests with a fake clock call it directly.
func (s *Server) Sweep(ctx context.Context) error {
	s.keyLimit.sweep()
	s.addrLimit.sweep()
	s.handshakeLimit.sweep()
	s.subscribeLimit.sweep()
	s.ackLimit.sweep()
	if s.limits.TTL <= 0 {
		return nil
	}
	n, err := s.store.Expire(ctx, s.now().Add(-s.limits.TTL))
	s.metrics.expired.Add(float64(n))
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("expire envelopes", "err", err)
		}
		return fmt.Errorf("sweep: %w", err)
	}
	if n > 0 {
		s.log.Info("expired envelopes", "count", n)
	}
	return nil
}
