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
	"golang.org/x/sync/semaphore"

	"github.com/ferry-im/ferry/channel"
)

// Server is a relay. It serves connections handed to ServeConn and owns one
// background goroutine, the TTL sweeper. Create it with NewServer.
type Server struct {
	key      channel.KeyPair
	store    *timedStore // wraps Config.Store
	log      *slog.Logger
	now      func() time.Time
	rand     io.Reader
	limits   Limits
	budgets  Budgets
	metrics  *metrics
	hub      hub
	cluster  *cluster // nil for a relay alone
	rankings *rankings
	blobs    BlobStore // nil: no blob store
	writers  blobWriters

	conns    *connBudget
	frameMem *memPool
	sendMem  *semaphore.Weighted // nil: no budget
	// sendInFlight counts the bytes taken from sendMem, for metrics.
	sendInFlight atomic.Int64
	queueMem     byteBudget
	disk         diskBudget

	keyLimit, addrLimit, handshakeLimit *limiter
	subscribeLimit, ackLimit            *limiter
	ackAddrLimit                        *limiter // acks per address: 10 times the per-key bucket
	bundleLimit                         *limiter // per mailbox
	touched                             touchCache

	// readCtx ends on Shutdown: connections stop reading new frames.
	// workCtx ends on Close: handlers and deliveries in flight give up.
	readCtx, workCtx   context.Context
	stopRead, stopWork context.CancelFunc
	sweeperDone        chan struct{}
	reaperDone         chan struct{}
	started            time.Time // for conn.lastFrame
	nextConnID         atomic.Uint64
	serving            sync.WaitGroup // ServeConn calls in flight
	shutdownOnce       sync.Once
	closeOnce          sync.Once

	// mu protects closing and open.
	mu      sync.Mutex
	closing bool
	open    map[*conn]struct{}
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
	rk, err := newRankings(cfg.RankingPublishers)
	if err != nil {
		return nil, err
	}
	now := cfg.now()
	lim := cfg.Limits.withDefaults()
	bud := cfg.Budgets.withDefaults()
	m := newMetrics()
	s := &Server{
		key:            cfg.Key,
		store:          newTimedStore(cfg.Store, m.storeTime),
		log:            slog.New(newLogHandler(cfg.logger().Handler(), now)),
		now:            now,
		rand:           cfg.rand(),
		limits:         lim,
		budgets:        bud,
		metrics:        m,
		hub:            hub{subs: make(map[[16]byte][]*subscriber)},
		rankings:       rk,
		blobs:          cfg.Blobs,
		keyLimit:       newLimiter(lim.KeyRate, lim.KeyBurst, now),
		addrLimit:      newLimiter(lim.AddrRate, lim.AddrBurst, now),
		handshakeLimit: newLimiter(lim.HandshakeRate, lim.HandshakeBurst, now),
		subscribeLimit: newLimiter(lim.SubscribeRate, lim.SubscribeBurst, now),
		ackLimit:       newLimiter(lim.AckRate, lim.AckBurst, now),
		ackAddrLimit:   newLimiter(10*lim.AckRate, 10*lim.AckBurst, now),
		bundleLimit:    newLimiter(lim.BundleRate, lim.BundleBurst, now),
		sweeperDone:    make(chan struct{}),
		reaperDone:     make(chan struct{}),
		started:        time.Now(),
		open:           make(map[*conn]struct{}),
	}
	s.conns = newConnBudget(bud, lim.ConnsPerAddr, func() time.Duration { return time.Duration(s.since()) }, func(reason string) { m.shed.WithLabelValues(reason).Inc() })
	s.frameMem = &memPool{limit: bud.FrameMemory, shed: func() { m.shed.WithLabelValues("frame_memory").Inc() }}
	if bud.SendMemory > 0 {
		s.sendMem = semaphore.NewWeighted(bud.SendMemory)
	}
	s.queueMem.limit = bud.QueueMemory
	s.disk = diskBudget{limit: bud.Disk, free: bud.DiskFree, reserve: bud.DiskReserve}
	m.registerBudgets(s)
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
	s.serving.Add(1)
	s.mu.Unlock()
	defer s.serving.Done()
	s.metrics.connsTotal.Inc()
	s.metrics.connsOpen.Inc()
	defer s.metrics.connsOpen.Dec()

	id := s.nextConnID.Add(1)
	log := s.log.With("conn", id)
	addr := addrKey(nc.RemoteAddr())
	slot, err := s.conns.admit(addr, func() { nc.Close() })
	if err != nil {
		s.metrics.handshakes.WithLabelValues("refused").Inc()
		log.Debug("connection refused", "reason", err)
		nc.Close()
		return fmt.Errorf("serve conn: %w", err)
	}
	defer s.conns.release(slot)
	if !s.handshakeLimit.allow(addr) {
		s.metrics.handshakes.WithLabelValues("rate_limited").Inc()
		log.Debug("handshake rate limited")
		nc.Close()
		return errors.New("serve conn: too many handshakes from this address")
	}

	frames := s.frameMem.account(func() { nc.Close() })
	defer frames.retire()
	ch, err := s.handshake(ctx, nc, log, frames)
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
	if !s.conns.opened(slot, c) {
		ch.Close()
		return errors.New("serve conn: shed during the handshake")
	}
	if !s.track(c) {
		ch.Close()
		return ErrClosed
	}
	defer s.untrack(c)
	defer s.writers.forget(c)
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
func (s *Server) handshake(ctx context.Context, nc net.Conn, log *slog.Logger, budget channel.Budget) (*channel.Conn, error) {
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
		ch, err := (&channel.Config{Rand: s.rand, Logger: log, Budget: budget}).Server(hctx, nc, s.key)
		done <- result{ch, err}
	}()
	r := <-done
	return r.ch, r.err
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
		s.serving.Wait()
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
	s.serving.Wait()
	<-s.sweeperDone
	<-s.reaperDone
	s.stopCluster()
	return nil
}

// sweeper deletes expired envelopes, idle mailboxes and idle rate-limit
// buckets every SweepInterval, and reads the store's disk use every
// Budgets.DiskCheckInterval, until Close.
func (s *Server) sweeper() {
	defer close(s.sweeperDone)
	var sweep <-chan time.Time
	if s.limits.SweepInterval > 0 {
		t := time.NewTicker(s.limits.SweepInterval)
		defer t.Stop()
		sweep = t.C
	}
	disk := time.NewTicker(s.budgets.DiskCheckInterval)
	defer disk.Stop()
	s.CheckDisk(s.workCtx)
	for {
		select {
		case <-s.workCtx.Done():
			return
		case <-sweep:
			s.Sweep(s.workCtx)
		case <-disk.C:
			s.CheckDisk(s.workCtx)
		}
	}
}

// Sweep runs one sweep now: it deletes envelopes older than the TTL and
// mailboxes idle for longer than MailboxIdle, and forgets idle rate-limit
// buckets. The sweeper calls it every SweepInterval; tests with a fake
// clock call it directly.
func (s *Server) Sweep(ctx context.Context) error {
	for _, l := range []*limiter{s.keyLimit, s.addrLimit, s.handshakeLimit, s.subscribeLimit, s.ackLimit, s.ackAddrLimit, s.bundleLimit} {
		l.sweep()
	}
	errs := []error{s.sweepBlobs(ctx)}
	if s.limits.TTL > 0 {
		n, err := s.store.Expire(ctx, s.now().Add(-s.limits.TTL))
		s.metrics.expired.Add(float64(n))
		if err != nil {
			errs = append(errs, fmt.Errorf("expire envelopes: %w", err))
		} else if n > 0 {
			s.log.Info("expired envelopes", "count", n)
		}
	}
	if s.limits.MailboxIdle > 0 {
		n, err := s.store.DeleteIdle(ctx, s.now().Add(-s.limits.MailboxIdle))
		s.metrics.idleMailboxes.Add(float64(n))
		if err != nil {
			errs = append(errs, fmt.Errorf("delete idle mailboxes: %w", err))
		} else if n > 0 {
			s.log.Info("deleted idle mailboxes", "count", n)
		}
	}
	if err := errors.Join(errs...); err != nil {
		if ctx.Err() == nil {
			s.log.Error("sweep", "err", err)
		}
		return fmt.Errorf("sweep: %w", err)
	}
	return nil
}

// CheckDisk reads the store's disk use now and updates the disk budget
// (Budgets.Disk, Budgets.DiskFree). The sweeper calls it every
// DiskCheckInterval. A store that is not a Sizer has no disk budget.
func (s *Server) CheckDisk(ctx context.Context) error {
	u, ok, err := s.store.DiskUsage(ctx)
	if !ok {
		return nil
	}
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("read the store's disk use", "err", err)
		}
		return fmt.Errorf("check disk: %w", err)
	}
	wasLow, wasFull := s.disk.low(), s.disk.full()
	s.disk.update(u)
	attrs := []any{"used_bytes", u.Used, "free_bytes", u.Free, "budget_bytes", s.budgets.Disk, "keep_free_bytes", s.budgets.DiskFree}
	switch low, full := s.disk.low(), s.disk.full(); {
	case full && !wasFull:
		s.log.Error("relay storage is full: refusing new envelopes and mailboxes until space is freed (see docs/operations.md, Budgets and limits)", attrs...)
	case low && !wasLow:
		s.log.Warn("relay storage is nearly full: only envelopes to mailboxes holding under 1 MiB are taken, and no new mailboxes, until space is freed (see docs/operations.md, Budgets and limits)", attrs...)
	case !low && wasLow:
		s.log.Info("relay storage has room again", "used_bytes", u.Used, "free_bytes", u.Free)
	}
	return nil
}

// touchCache remembers the mailboxes touched today, so that an owner's
// activity costs one store write a day, not one per connection.
type touchCache struct {
	// mu protects day and seen.
	mu   sync.Mutex
	day  int64
	seen map[[16]byte]struct{}
}

// first reports whether mb has not been touched on day yet, and records it.
func (c *touchCache) first(mb [16]byte, day int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if day != c.day || c.seen == nil {
		c.day, c.seen = day, make(map[[16]byte]struct{})
	}
	if _, ok := c.seen[mb]; ok {
		return false
	}
	c.seen[mb] = struct{}{}
	return true
}

// forget lets mb be touched again today (its Touch failed).
func (c *touchCache) forget(mb [16]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.seen, mb)
}
