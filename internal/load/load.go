// Package load generates load on Ferry relays, as cmd/ferry-load and the
// cluster tests drive it: many authenticated connections, each a user with
// its own mailbox, all subscribed; some of them send sealed-envelope-sized
// messages to the others, at a target rate or as fast as the relays
// acknowledge them; every process counts what its users receive, and the
// delivery latency (from the Send to the Deliver, on this machine's
// clock).
//
// A run may span several processes (Plan): each serves a slice of the
// users, and they agree on every key, mailbox and message without talking
// to each other. Users dial from many loopback source addresses, so one
// machine can open far more connections than one address's ports allow.
// Connections that break are dialled again (to the next endpoint of the
// link), re-subscribed, and their unacknowledged Sends resent with the
// same ids, as a client's outbox would: a relay killed mid-run costs
// latency, not messages.
//
// It speaks the wire protocol directly (packages channel and wire), without
// the client library's end-to-end encryption: the relay only ever sees
// opaque envelopes, so what it costs the relay is the same.
package load

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-im/ferry/link"
)

// Config is one process's part of a run. Plan and Relay are required;
// every other zero field has the default its comment gives.
type Config struct {
	Plan Plan
	// Proc is this process's index in the plan.
	Proc int
	// Relay is the relay's (or cluster's) public key.
	Relay [32]byte
	// Endpoints are the relays' tcp endpoints; user i dials
	// Endpoints[i%len] first and the next one after a failure.
	Endpoints []link.Endpoint
	// Sources are the local addresses users dial from, in turn. If empty,
	// the system picks.
	Sources []netip.Addr
	// Rate is the messages per second of the whole run (all processes),
	// spread over the senders. If zero, each sender sends as fast as its
	// Sends are acknowledged.
	Rate float64
	// Window is the Sends in flight per sender. If zero, 1.
	Window int
	// Size is the envelope size in bytes, at least 16. If zero, 512.
	Size int
	// Parallel is how many connections are being set up at once. If zero,
	// 64. A setup that fails is tried again, 8 times in all.
	Parallel int
	// Timeout bounds the whole run but Hold. If zero, 10 minutes.
	Timeout time.Duration
	// Quiet ends the wait for deliveries after that long without one
	// (some messages were refused, or lost). If zero, 10 seconds.
	Quiet time.Duration
	// Hold keeps the connections open, idle, after the messages, for
	// measuring what idle connections cost.
	Hold time.Duration
	// Ready, if set, is called once every user is connected and
	// subscribed, before sending.
	Ready func()
	// Start, if set, is waited for before sending (a barrier between the
	// processes of a run).
	Start <-chan struct{}
	// Logger receives progress and connection errors. If nil, nothing is
	// logged.
	Logger *slog.Logger
}

func (c *Config) window() int            { return defaultInt(c.Window, 1) }
func (c *Config) size() int              { return max(defaultInt(c.Size, 512), 16) }
func (c *Config) parallel() int          { return defaultInt(c.Parallel, 64) }
func (c *Config) timeout() time.Duration { return defaultDur(c.Timeout, 10*time.Minute) }
func (c *Config) quiet() time.Duration   { return defaultDur(c.Quiet, 10*time.Second) }

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func defaultInt(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

func defaultDur(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

// Result is what one process of a run saw; Merge adds up several.
type Result struct {
	Users      int `json:"users"`      // connected and subscribed
	Sent       int `json:"sent"`       // acknowledged by the relay (SendOK)
	Expected   int `json:"expected"`   // messages addressed to this process's users
	Received   int `json:"received"`   // distinct messages delivered
	Duplicates int `json:"duplicates"` // deliveries of a message already delivered
	// StoredTwice counts messages delivered under two different seqs:
	// the relay stored one message twice. It must be 0.
	StoredTwice int `json:"stored_twice"`
	Refused     int `json:"refused"`    // SendErr answers that were not retried
	Errors      int `json:"errors"`     // failed dials and broken connections
	Reconnects  int `json:"reconnects"` // connections dialled again
	// First and Last are the first Send and the last new delivery.
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// ConnectTime is how long setting up every connection took.
	ConnectTime time.Duration `json:"connect_ns"`
	Latency     Hist          `json:"latency"`
}

// Merge adds o to r.
func (r *Result) Merge(o Result) {
	r.Users += o.Users
	r.Sent += o.Sent
	r.Expected += o.Expected
	r.Received += o.Received
	r.Duplicates += o.Duplicates
	r.StoredTwice += o.StoredTwice
	r.Refused += o.Refused
	r.Errors += o.Errors
	r.Reconnects += o.Reconnects
	if r.First.IsZero() || !o.First.IsZero() && o.First.Before(r.First) {
		r.First = o.First
	}
	if o.Last.After(r.Last) {
		r.Last = o.Last
	}
	r.ConnectTime = max(r.ConnectTime, o.ConnectTime)
	r.Latency.Merge(o.Latency)
}

// Throughput is the messages delivered per second between the first Send
// and the last delivery.
func (r *Result) Throughput() float64 {
	d := r.Last.Sub(r.First).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(r.Received) / d
}

// runner is one process's run.
type runner struct {
	cfg   Config
	plan  Plan
	log   *slog.Logger
	users []*user // this process's, from Plan.Lo(Proc)
	lo    int

	ctx    context.Context // ends with the run (Timeout, or the caller's)
	closed atomic.Bool     // the run is over: broken connections stay broken
	// usersMu protects users while connectAll fills it in.
	usersMu sync.Mutex

	sent, refused, errs, reconnects atomic.Int64
	recv                            received

	// ackMu protects dirty: users with deliveries to acknowledge.
	ackMu sync.Mutex
	dirty []*user
}

// Run runs this process's part of cfg.Plan: it connects and subscribes
// every user, sends this process's messages, waits until its users have
// received every message addressed to them (or Quiet passes without one),
// holds the connections for Hold, and closes them. It returns an error
// only if the run could not start (a bad plan, or a connection that could
// not be set up); what went wrong later is counted in the Result.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Plan.Check(); err != nil {
		return Result{}, err
	}
	if len(cfg.Endpoints) == 0 {
		return Result{}, errors.New("run load: no relay endpoints")
	}
	for _, e := range cfg.Endpoints {
		if e.Transport != "tcp" {
			return Result{}, fmt.Errorf("run load: endpoint %s: only tcp endpoints can be loaded", e)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout())
	defer cancel()
	r := &runner{cfg: cfg, plan: cfg.Plan, log: cfg.logger(), ctx: ctx, lo: cfg.Plan.Lo(cfg.Proc)}
	sends, expect := r.plan.work(cfg.Proc)
	r.recv.expect = expect
	defer r.closeAll()
	var pings sync.WaitGroup
	pingCtx, stopPings := context.WithCancel(ctx)
	defer func() {
		stopPings()
		pings.Wait()
	}()
	pings.Go(func() { r.pingLoop(pingCtx) })
	start := time.Now()
	if err := r.connectAll(); err != nil {
		return Result{}, err
	}
	res := Result{Users: len(r.users), Expected: expect, ConnectTime: time.Since(start)}
	r.log.Info("connected", "users", len(r.users), "in", res.ConnectTime)
	if cfg.Ready != nil {
		cfg.Ready()
	}
	if cfg.Start != nil {
		select {
		case <-cfg.Start:
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	var acks sync.WaitGroup
	ackCtx, stopAcks := context.WithCancel(ctx)
	acks.Go(func() { r.ackLoop(ackCtx) })
	r.sendAll(sends)
	r.recv.wait(ctx, cfg.quiet())
	stopAcks()
	acks.Wait()
	r.flushAcks()
	r.hold(ctx)
	return r.result(res), nil
}

// result fills in what the run counted.
func (r *runner) result(res Result) Result {
	res.Sent = int(r.sent.Load())
	res.Refused = int(r.refused.Load())
	res.Errors = int(r.errs.Load())
	res.Reconnects = int(r.reconnects.Load())
	r.recv.mu.Lock()
	defer r.recv.mu.Unlock()
	res.Received, res.Duplicates, res.StoredTwice = len(r.recv.seqs), r.recv.dups, r.recv.twice
	res.First, res.Last, res.Latency = r.recv.first, r.recv.last, r.recv.hist
	return res
}

// hold keeps the connections open for Hold (pingLoop keeps them alive).
func (r *runner) hold(ctx context.Context) {
	if r.cfg.Hold <= 0 {
		return
	}
	r.log.Info("holding connections", "users", len(r.users), "for", r.cfg.Hold)
	select {
	case <-time.After(r.cfg.Hold):
	case <-ctx.Done():
	}
}

// pingLoop pings every connected user once a minute (a sixtieth of them
// each second) until ctx ends, so that the relay does not close as idle a
// connection that waits for the others to be set up, or holds.
func (r *runner) pingLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.usersMu.Lock()
		var some []*user
		for j := i % 60; j < len(r.users); j += 60 {
			if u := r.users[j]; u != nil {
				some = append(some, u)
			}
		}
		r.usersMu.Unlock()
		for _, u := range some {
			u.ping()
		}
	}
}

// closeAll closes every connection.
func (r *runner) closeAll() {
	r.closed.Store(true)
	for _, u := range r.users {
		u.close()
	}
}

// received is what the users of a process were delivered.
type received struct {
	expect int
	// mu protects the fields below.
	mu          sync.Mutex
	seqs        map[int]uint64 // message -> the seq it was first delivered with
	dups, twice int
	first, last time.Time
	hist        Hist
	news        chan struct{} // signalled on every new message
}

// deliver records message m delivered with seq, sent at sent.
func (v *received) deliver(m int, seq uint64, sent time.Time) {
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if old, ok := v.seqs[m]; ok {
		v.dups++
		if old != seq {
			v.twice++
		}
		return
	}
	if v.seqs == nil {
		v.seqs = map[int]uint64{}
	}
	v.seqs[m] = seq
	v.hist.Add(now.Sub(sent))
	v.last = now
	if v.news != nil {
		select {
		case v.news <- struct{}{}:
		default:
		}
	}
}

// started records the first Send.
func (v *received) started(t time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.first.IsZero() || t.Before(v.first) {
		v.first = t
	}
}

// wait returns once every expected message was delivered, or quiet has
// passed without a new one, or ctx ends.
func (v *received) wait(ctx context.Context, quiet time.Duration) {
	v.mu.Lock()
	v.news = make(chan struct{}, 1)
	v.mu.Unlock()
	t := time.NewTimer(quiet)
	defer t.Stop()
	for {
		v.mu.Lock()
		done := len(v.seqs) >= v.expect
		v.mu.Unlock()
		if done {
			return
		}
		select {
		case <-v.news:
			t.Reset(quiet)
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}
