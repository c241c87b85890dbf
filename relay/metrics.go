package relay

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ferry-im/ferry/wire"
)

// metrics are the Server's Prometheus collectors, registered on the
// Server's own registry (never the global one).
type metrics struct {
	reg           *prometheus.Registry
	connsOpen     prometheus.Gauge
	connsTotal    prometheus.Counter
	handshakes    *prometheus.CounterVec  // result
	frames        *prometheus.CounterVec  // type
	frameByType   [256]prometheus.Counter // frames' children, looked up once
	sends         *prometheus.CounterVec  // result
	deliveries    prometheus.Counter
	resyncs       prometheus.Counter
	acksDropped   prometheus.Counter
	subscribers   prometheus.Gauge
	bundles       *prometheus.CounterVec // result
	expired       prometheus.Counter
	idleMailboxes prometheus.Counter
	storeTime     *prometheus.HistogramVec // op
	shed          *prometheus.CounterVec   // reason
	blob          *blobMetrics
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		connsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_relay_connections",
			Help: "Connections being served (handshake done or in progress).",
		}),
		connsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_relay_connections_total",
			Help: "Connections handed to the server.",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_relay_handshakes_total",
			Help: "Channel handshakes by result (ok, failed, rate_limited, refused: by a budget or the per-address limit).",
		}, []string{"result"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_relay_frames_total",
			Help: "Frames received from clients, by type (unknown types as \"unknown\").",
		}, []string{"type"}),
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_relay_sends_total",
			Help: "Send requests by result (stored, duplicate, denied, quota, rate_limited, too_large, disk_full, error).",
		}, []string{"result"}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_relay_deliveries_total",
			Help: "Envelopes pushed to subscribed connections (redeliveries included).",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_relay_delivery_resyncs_total",
			Help: "Times a subscriber's push queue overflowed and was refilled from the store.",
		}),
		acksDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_relay_acks_rate_limited_total",
			Help: "Acks ignored because their key or address was over its rate (the envelopes stay pending).",
		}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ferry_relay_subscribers",
			Help: "Connections subscribed to their mailbox.",
		}),
		bundles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_relay_bundles_total",
			Help: "Prekey bundle requests by result (ok, last_resort: over the mailbox's one-time rate, denied, not_found, rate_limited, error).",
		}, []string{"result"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_relay_expired_total",
			Help: "Undelivered envelopes deleted because their TTL ran out.",
		}),
		idleMailboxes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_relay_idle_mailboxes_deleted_total",
			Help: "Mailboxes deleted because their owner was not seen for Limits.MailboxIdle.",
		}),
		storeTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ferry_relay_store_seconds",
			Help:    "Latency of store calls by operation.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2.5, 12),
		}, []string{"op"}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_relay_shed_total",
			Help: "Connections closed or refused to stay within a budget, by reason: handshake (a handshake in progress shed for a newcomer), idle (an idle connection shed for a newcomer), refused (a newcomer refused: every connection was active), addr_full (a newcomer over the per-address limit), frame_memory (a connection whose frames in transit grew least recently).",
		}, []string{"reason"}),
	}
	m.reg.MustRegister(m.connsOpen, m.connsTotal, m.handshakes, m.frames, m.sends,
		m.deliveries, m.resyncs, m.acksDropped, m.subscribers, m.bundles, m.expired, m.idleMailboxes, m.storeTime, m.shed,
		// The Go runtime's own metrics (heap, GC, goroutines, scheduler)
		// and the process's (resident memory, open files, CPU).
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.MetricsGC, collectors.MetricsMemory, collectors.MetricsScheduler)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.blob = newBlobMetrics(m.reg)
	for t := range m.frameByType {
		m.frameByType[t] = m.frames.WithLabelValues(frameLabel(wire.Type(t)))
	}
	return m
}

// registerBudgets exports each budget's limit and what is in use.
func (m *metrics) registerBudgets(s *Server) {
	limit := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ferry_relay_budget_limit",
		Help: "Each budget's limit (0: no limit): conns, handshakes, frame_memory, send_memory, queue_memory and memory in bytes, disk (bytes the store may use), disk_free (bytes to leave free) and disk_reserve (the last bytes of the disk budget, for mailboxes that hold little).",
	}, []string{"budget"})
	b := s.budgets
	for name, v := range map[string]int64{
		"memory": b.Memory, "conns": int64(b.Conns), "handshakes": int64(b.Handshakes),
		"frame_memory": b.FrameMemory, "send_memory": b.SendMemory, "queue_memory": b.QueueMemory,
		"disk": b.Disk, "disk_free": b.DiskFree, "disk_reserve": b.DiskReserve,
	} {
		limit.WithLabelValues(name).Set(float64(v))
	}
	used := func(name string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "ferry_relay_budget_used",
			Help:        "What each budget has in use now (disk: the store's bytes at the last check; disk_low: 1 while only the reserve is left; disk_full: 1 while new data is refused).",
			ConstLabels: prometheus.Labels{"budget": name},
		}, f)
	}
	m.reg.MustRegister(limit,
		used("conns", func() float64 { n, _ := s.conns.counts(); return float64(n) }),
		used("handshakes", func() float64 { _, n := s.conns.counts(); return float64(n) }),
		used("frame_memory", func() float64 { return float64(s.frameMem.inUse()) }),
		used("send_memory", func() float64 { return float64(s.sendInFlight.Load()) }),
		used("queue_memory", func() float64 { return float64(s.queueMem.used.Load()) }),
		used("disk", func() float64 { return float64(s.disk.used.Load()) }),
		used("disk_full", func() float64 { return flag(s.disk.full()) }),
		used("disk_low", func() float64 { return flag(s.disk.low()) }),
	)
}

// flag is 1 for true and 0 for false, as a gauge.
func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func frameLabel(t wire.Type) string {
	if t.Known() {
		return t.String()
	}
	return "unknown"
}

// frame counts one received frame of type t.
func (m *metrics) frame(t wire.Type) { m.frameByType[t].Inc() }

// timedStore wraps a Store and records each call's latency.
type timedStore struct {
	s Store
	// one observer per op, looked up once.
	put, pending, ack, expire, usage, setToken, addToken, removeToken, hasToken prometheus.Observer
	touch, deleteIdle, putPrekeys, popBundle, bundle, prekeyCounts, diskUsage   prometheus.Observer
}

var (
	_ Store         = (*timedStore)(nil)
	_ AsyncPutter   = (*timedStore)(nil)
	_ PollingPutter = (*timedStore)(nil)
)

func newTimedStore(s Store, h *prometheus.HistogramVec) *timedStore {
	return &timedStore{
		s:            s,
		put:          h.WithLabelValues("put"),
		pending:      h.WithLabelValues("pending"),
		ack:          h.WithLabelValues("ack"),
		expire:       h.WithLabelValues("expire"),
		usage:        h.WithLabelValues("usage"),
		setToken:     h.WithLabelValues("set_token"),
		addToken:     h.WithLabelValues("add_token"),
		removeToken:  h.WithLabelValues("remove_token"),
		hasToken:     h.WithLabelValues("has_token"),
		touch:        h.WithLabelValues("touch"),
		deleteIdle:   h.WithLabelValues("delete_idle"),
		putPrekeys:   h.WithLabelValues("put_prekeys"),
		popBundle:    h.WithLabelValues("pop_bundle"),
		bundle:       h.WithLabelValues("bundle"),
		prekeyCounts: h.WithLabelValues("prekey_counts"),
		diskUsage:    h.WithLabelValues("disk_usage"),
	}
}

func since(o prometheus.Observer, t time.Time) { o.Observe(time.Since(t).Seconds()) }

func (t *timedStore) Put(ctx context.Context, mb [16]byte, env Envelope, q Quota) (uint64, bool, error) {
	defer since(t.put, time.Now())
	return t.s.Put(ctx, mb, env, q)
}

// PutAsync uses the store's own PutAsync if it has one; otherwise the Put
// runs now and the returned function reports it.
func (t *timedStore) PutAsync(ctx context.Context, mb [16]byte, env Envelope, q Quota) func() (uint64, bool, error) {
	wait, _ := t.PutAsyncPoll(ctx, mb, env, q)
	return wait
}

// PutAsyncPoll uses the store's own PutAsyncPoll or PutAsync if it has
// one; otherwise the Put runs now and the returned functions report it.
// Without PutAsyncPoll, ready reports false until wait is called, so the
// caller waits for each result in turn.
func (t *timedStore) PutAsyncPoll(ctx context.Context, mb [16]byte, env Envelope, q Quota) (func() (uint64, bool, error), func() bool) {
	start := time.Now()
	var wait func() (uint64, bool, error)
	ready := notReady
	switch s := t.s.(type) {
	case PollingPutter:
		wait, ready = s.PutAsyncPoll(ctx, mb, env, q)
	case AsyncPutter:
		wait = s.PutAsync(ctx, mb, env, q)
	default:
		seq, dup, err := t.s.Put(ctx, mb, env, q)
		since(t.put, start)
		return func() (uint64, bool, error) { return seq, dup, err }, isReady
	}
	return func() (uint64, bool, error) {
		defer since(t.put, start)
		return wait()
	}, ready
}

func notReady() bool { return false }
func isReady() bool  { return true }

func (t *timedStore) Pending(ctx context.Context, mb [16]byte, after uint64, limit int) ([]Envelope, error) {
	defer since(t.pending, time.Now())
	return t.s.Pending(ctx, mb, after, limit)
}

func (t *timedStore) Ack(ctx context.Context, mb [16]byte, seqs []uint64) (int, error) {
	defer since(t.ack, time.Now())
	return t.s.Ack(ctx, mb, seqs)
}

func (t *timedStore) Expire(ctx context.Context, cutoff time.Time) (int, error) {
	defer since(t.expire, time.Now())
	return t.s.Expire(ctx, cutoff)
}

func (t *timedStore) Usage(ctx context.Context, mb [16]byte) (Usage, error) {
	defer since(t.usage, time.Now())
	return t.s.Usage(ctx, mb)
}

func (t *timedStore) SetToken(ctx context.Context, mb [16]byte, hash [32]byte) error {
	defer since(t.setToken, time.Now())
	return t.s.SetToken(ctx, mb, hash)
}

func (t *timedStore) AddToken(ctx context.Context, mb [16]byte, hash [32]byte, max int) error {
	defer since(t.addToken, time.Now())
	return t.s.AddToken(ctx, mb, hash, max)
}

func (t *timedStore) RemoveToken(ctx context.Context, mb [16]byte, hash [32]byte) error {
	defer since(t.removeToken, time.Now())
	return t.s.RemoveToken(ctx, mb, hash)
}

func (t *timedStore) HasToken(ctx context.Context, mb [16]byte, hash [32]byte) (bool, error) {
	defer since(t.hasToken, time.Now())
	return t.s.HasToken(ctx, mb, hash)
}

func (t *timedStore) Touch(ctx context.Context, mb [16]byte, at time.Time) error {
	defer since(t.touch, time.Now())
	return t.s.Touch(ctx, mb, at)
}

func (t *timedStore) DeleteIdle(ctx context.Context, cutoff time.Time) (int, error) {
	defer since(t.deleteIdle, time.Now())
	return t.s.DeleteIdle(ctx, cutoff)
}

func (t *timedStore) Bundle(ctx context.Context, mb [16]byte) (Bundle, error) {
	defer since(t.bundle, time.Now())
	return t.s.Bundle(ctx, mb)
}

// DiskUsage asks the store if it is a Sizer; ok is false if it is not.
func (t *timedStore) DiskUsage(ctx context.Context) (u DiskUsage, ok bool, err error) {
	sz, ok := t.s.(Sizer)
	if !ok {
		return DiskUsage{}, false, nil
	}
	defer since(t.diskUsage, time.Now())
	u, err = sz.DiskUsage(ctx)
	return u, true, err
}

func (t *timedStore) PutPrekeys(ctx context.Context, mb [16]byte, up PrekeyUpload, max int) error {
	defer since(t.putPrekeys, time.Now())
	return t.s.PutPrekeys(ctx, mb, up, max)
}

func (t *timedStore) PopBundle(ctx context.Context, mb [16]byte) (Bundle, error) {
	defer since(t.popBundle, time.Now())
	return t.s.PopBundle(ctx, mb)
}

func (t *timedStore) PrekeyCounts(ctx context.Context, mb [16]byte) (int, int, error) {
	defer since(t.prekeyCounts, time.Now())
	return t.s.PrekeyCounts(ctx, mb)
}

func (t *timedStore) Close() error { return t.s.Close() }
