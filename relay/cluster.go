package relay

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// A cluster is several relays sharing one Store, linked by a Bus
// (Config.Bus). Each relay publishes the envelopes it stores (hub.publish)
// and watches the mailboxes it has subscribers for; announcements from the
// other relays are pushed like its own (hub.deliver).
//
// While the Bus is down, announcements may be lost, so the relay polls the
// Store every BusPoll for the mailboxes that received envelopes since
// shortly before the Bus went down (ArrivalLister), and wakes their
// subscribers here, which read the store from the last seq they are sure
// of (subscriber.wake). It goes on polling for two more rounds after the
// Bus is back, for announcements lost on the way up. The window polled
// starts pollMargin before the Bus went down (envelopes are stamped with
// the storing relay's clock, before they commit), and reaches back at most
// pollWindow, so a long outage costs a bounded read per round.

const (
	pollMargin = 2 * time.Minute // received may be rounded down to the minute
	pollWindow = 5 * time.Minute
	// pollLimit bounds the mailboxes one poll returns.
	pollLimit = 1 << 20
)

// cluster is a Server's Bus state.
type cluster struct {
	bus      Bus
	arrivals ArrivalLister
	poll     time.Duration
	done     sync.WaitGroup // the listener and the poller

	// mu protects the fields below.
	mu        sync.Mutex
	up        bool
	downSince time.Time // Config.Now when the bus was last seen going down
	pollUntil time.Time // keep polling until then after it came back

	received, published prometheus.Counter
	polls, errs         prometheus.Counter
	upGauge             prometheus.Gauge
}

// startCluster links s to cfg.Bus, if set, and starts its listener and
// poller goroutines, which end on Close.
func (s *Server) startCluster(cfg Config) error {
	if cfg.Bus == nil {
		return nil
	}
	lister, ok := cfg.Store.(ArrivalLister)
	if !ok {
		return errors.New("new relay server: Config.Bus is set but Config.Store cannot be shared by a cluster (it does not list arrivals): use relay/postgres")
	}
	c := &cluster{
		bus:       cfg.Bus,
		arrivals:  lister,
		poll:      cfg.busPoll(),
		downSince: s.now(),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_relay_bus_received_total",
			Help: "Envelopes announced by the other relays of the cluster for subscribers here.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_relay_bus_published_total",
			Help: "Envelopes stored here and announced to the other relays.",
		}),
		polls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_relay_bus_polls_total",
			Help: "Polls of the store for envelopes stored by the other relays, made while the bus was down.",
		}),
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_relay_bus_errors_total",
			Help: "Failed bus publishes, watches and polls.",
		}),
		upGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_relay_bus_up",
			Help: "1 while the cluster bus is up, 0 while the relay polls the store instead.",
		}),
	}
	s.metrics.reg.MustRegister(c.received, c.published, c.polls, c.errs, c.upGauge)
	s.cluster = c
	s.hub.bus = publishCounter{cfg.Bus, c.published}
	s.hub.busError = func(what string, err error) {
		c.errs.Inc()
		s.log.Debug("cluster bus", "op", what, "err", err)
	}
	c.done.Go(s.listenBus)
	c.done.Go(s.pollStore)
	return nil
}

// stopCluster waits for the cluster's goroutines; workCtx has ended.
func (s *Server) stopCluster() {
	if s.cluster != nil {
		s.cluster.done.Wait()
	}
}

// publishCounter counts successful publishes.
type publishCounter struct {
	Bus
	n prometheus.Counter
}

func (p publishCounter) Publish(ctx context.Context, mb [16]byte, env Envelope) error {
	err := p.Bus.Publish(ctx, mb, env)
	if err == nil {
		p.n.Inc()
	}
	return err
}

// listenBus hands the other relays' announcements to the subscribers here
// until Close. If the bus stops listening before that, it counts as down
// for good.
func (s *Server) listenBus() {
	c := s.cluster
	err := c.bus.Listen(s.workCtx,
		func(mb [16]byte, env Envelope) {
			c.received.Inc()
			s.hub.deliver(mb, env)
		},
		s.busState)
	if s.workCtx.Err() == nil {
		s.log.Warn("cluster bus stopped; polling the store instead", "err", err)
		s.busState(false)
	}
}

// busState records that the bus went up or down.
func (s *Server) busState(up bool) {
	c := s.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	now := s.now()
	switch {
	case up && !c.up:
		c.pollUntil = now.Add(2 * c.poll)
		c.upGauge.Set(1)
		s.log.Info("cluster bus up")
	case !up && c.up:
		c.downSince = now
		c.upGauge.Set(0)
		s.log.Warn("cluster bus down; polling the store")
	}
	c.up = up
}

// pollStore polls the store every BusPoll while the bus is down (and a
// little after) until Close.
func (s *Server) pollStore() {
	c := s.cluster
	t := time.NewTicker(c.poll)
	defer t.Stop()
	for {
		select {
		case <-s.workCtx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		now := s.now()
		need := !c.up || now.Before(c.pollUntil)
		since := c.downSince.Add(-pollMargin)
		c.mu.Unlock()
		if !need {
			continue
		}
		since = maxTime(since, now.Add(-pollWindow))
		arrivals, err := c.arrivals.Arrivals(s.workCtx, since, pollLimit)
		if err != nil {
			c.errs.Inc()
			if s.workCtx.Err() == nil {
				s.log.Warn("poll the store for arrivals", "err", err)
			}
			continue
		}
		c.polls.Inc()
		for _, a := range arrivals {
			s.hub.wake(a.Mailbox, a.Seq)
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
