package censor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Engine applies a Policy to flows. It decides on a connection when it
// opens (Admit: residual blocks, penalties, outages, servers confirmed by
// probing) and on its first client payload (Inspect), and keeps the state
// the rules leave behind, keyed by the real client IP and the server
// address. The zero Engine applies the open policy (nothing is blocked).
// It is safe for concurrent use; Close stops the active probes it started.
type Engine struct {
	// Policy is the policy applied. If nil, every flow passes.
	Policy *Policy
	// Rand is the censor's randomness: blocking draws, penalties, outage
	// schedules, probes. If nil, crypto/rand.Reader is used. It must not
	// fail; a seeded source (math/rand/v2's ChaCha8) makes a run
	// reproducible.
	Rand io.Reader
	// Clock is the censor's time. If nil, SystemClock is used.
	Clock Clock
	// Logger receives a debug line per verdict other than pass and the
	// results of active probing. If nil, nothing is logged. Payloads are
	// never logged.
	Logger *slog.Logger
	// Prober runs the active probes of a probe rule. If nil, a zero Prober
	// with the engine's Rand and Clock is used.
	Prober *Prober
	// MaxEntries bounds each table of state (blocked 3-tuples, servers
	// under probe); the entries nearest to expiry go first when it is
	// full. If zero, 65536 is used.
	MaxEntries int
	// OnBlock, if set, is called when the engine blocks a server outside
	// any flow (after active probing confirmed it), without the engine's
	// lock held.
	OnBlock func(server netip.AddrPort, v Verdict)

	mu      sync.Mutex // mu protects the fields below and the rules' state
	started bool
	err     error // the policy's error, if it does not compile
	rules   []evaluator
	rnd     randSource
	blocks  map[blockKey]block
	ctx     context.Context
	cancel  context.CancelFunc
	closed  bool
	wg      sync.WaitGroup // the engine's goroutines (probes)
	ref     *refServer
}

// blockKey is a blocked 3-tuple: a client IP and a server address. The
// zero client blocks the server for every client.
type blockKey struct {
	client netip.Addr
	server netip.AddrPort
}

// block is the state a rule leaves for later connections on a 3-tuple.
type block struct {
	until    time.Time
	rule     string
	action   Action
	fail     float64 // the fraction of connections that fail
	evidence string
}

const defaultMaxEntries = 1 << 16

func (e *Engine) clock() Clock {
	if e.Clock == nil {
		return SystemClock{}
	}
	return e.Clock
}

func (e *Engine) maxEntries() int {
	if e.MaxEntries > 0 {
		return e.MaxEntries
	}
	return defaultMaxEntries
}

// start compiles the policy on first use. e.mu must be held.
func (e *Engine) start() {
	if e.started {
		return
	}
	e.started = true
	e.rnd = randSource{r: e.Rand}
	e.blocks = make(map[blockKey]block)
	e.ctx, e.cancel = context.WithCancel(context.Background())
	if e.Policy != nil {
		e.rules, e.err = e.Policy.compile()
	}
}

// Check compiles the policy and returns its error, if any. A policy that
// does not compile makes every flow reset, with the error as evidence.
func (e *Engine) Check() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.start()
	if e.err != nil {
		return fmt.Errorf("check policy: %w", e.err)
	}
	return nil
}

func (e *Engine) invalid() Verdict {
	return Verdict{Rule: "policy", Action: Reset, Evidence: fmt.Sprintf("invalid policy: %v", e.err)}
}

// Admit decides on a connection from client to server when it opens,
// before any payload: it is blocked by the state earlier verdicts left
// (a residual 3-tuple block, an SNI penalty, a server confirmed by
// probing) or by an outage; otherwise it passes.
func (e *Engine) Admit(client netip.Addr, server netip.AddrPort) Verdict {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.start()
	if e.err != nil {
		return e.invalid()
	}
	now := e.clock().Now()
	client = client.Unmap()
	server = netip.AddrPortFrom(server.Addr().Unmap(), server.Port())
	for _, k := range [...]blockKey{{client: client, server: server}, {server: server}} {
		b, ok := e.blocks[k]
		if !ok {
			continue
		}
		if !now.Before(b.until) {
			delete(e.blocks, k)
			continue
		}
		if b.fail < 1 && e.rnd.float() >= b.fail {
			continue
		}
		who := "3-tuple " + client.String() + " -> " + server.String()
		if !k.client.IsValid() {
			who = "server " + server.String()
		}
		ev := fmt.Sprintf("%s blocked by %s for %v more", who, b.rule, b.until.Sub(now).Round(time.Millisecond))
		if b.fail < 1 {
			ev += fmt.Sprintf(" (%.0f%% of connections fail)", 100*b.fail)
		}
		if b.evidence != "" {
			ev += ": " + b.evidence
		}
		return e.logged(Verdict{Rule: b.rule, Action: b.action, Evidence: ev})
	}
	for _, ev := range e.rules {
		if v, ok := ev.admit(e, client, server, now); ok && v.Action != Pass {
			return e.logged(v)
		}
	}
	return passVerdict
}

// Inspect decides on a flow's first client payload. Rules are evaluated
// in policy order: the first that drops or resets decides; otherwise the
// first that throttles; otherwise the flow passes. The verdict also
// carries the outages that may cut the flow later (see Disrupt).
func (e *Engine) Inspect(f *Flow) Verdict {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.start()
	if e.err != nil {
		return e.invalid()
	}
	now := e.clock().Now()
	f.Client = netip.AddrPortFrom(f.Client.Addr().Unmap(), f.Client.Port())
	f.Server = netip.AddrPortFrom(f.Server.Addr().Unmap(), f.Server.Port())
	merged := passVerdict
	for _, ev := range e.rules {
		v, ok := ev.inspect(e, f, now)
		if !ok {
			continue
		}
		switch v.Action {
		case Drop, Reset:
			return e.logged(v)
		case Throttle:
			if merged.Action == Pass {
				v.outages = append(merged.outages, v.outages...)
				v.watch = append(merged.watch, v.watch...)
				merged = v
				continue
			}
		}
		merged.outages = append(merged.outages, v.outages...)
		merged.watch = append(merged.watch, v.watch...)
	}
	if merged.Action != Pass {
		return e.logged(merged)
	}
	return merged
}

// Disrupt decides again on a flow that v let through, at the time of its
// latest read or write: it returns the verdict of an outage under way
// and true, or false when the flow may go on.
func (e *Engine) Disrupt(v Verdict) (Verdict, bool) {
	if len(v.outages) == 0 {
		return Verdict{}, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock().Now()
	for _, ev := range v.outages {
		if dv, ok := ev.disrupt(e, now); ok && dv.Action != Pass {
			return e.logged(dv), true
		}
	}
	return Verdict{}, false
}

// Observe decides again on a flow that v let through, once its TLS
// records (f.TLS) have grown: the record-shape rules that watch it
// (tls_in_tls) look at the first records after the TLS handshake. It
// returns the flow's new verdict and true once every such rule has
// decided (to block the flow, or that it passes and needs no more
// records), and false while they wait for more. The Middlebox calls it;
// f is a snapshot that nobody changes during the call.
func (e *Engine) Observe(v Verdict, f *Flow) (Verdict, bool) {
	if len(v.watch) == 0 {
		return v, true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock().Now()
	var waiting []*tlsInTLSEval
	for _, ev := range v.watch {
		bv, decided := ev.observe(e, f, now)
		switch {
		case !decided:
			waiting = append(waiting, ev)
		case bv.Action != Pass:
			return e.logged(bv), true
		}
	}
	v.watch = waiting
	return v, len(waiting) == 0
}

// logged logs a verdict at debug level and returns it.
func (e *Engine) logged(v Verdict) Verdict {
	if e.Logger != nil {
		e.Logger.Debug("censor verdict", "rule", v.Rule, "action", string(v.Action), "evidence", v.Evidence)
	}
	return v
}

// addBlock records a block, making room if the table is full. e.mu must
// be held.
func (e *Engine) addBlock(k blockKey, b block, now time.Time) {
	if _, ok := e.blocks[k]; !ok && len(e.blocks) >= e.maxEntries() {
		for k2, b2 := range e.blocks {
			if !now.Before(b2.until) {
				delete(e.blocks, k2)
			}
		}
		for len(e.blocks) >= e.maxEntries() {
			var oldest blockKey
			first := true
			var until time.Time
			for k2, b2 := range e.blocks {
				if first || b2.until.Before(until) {
					oldest, until, first = k2, b2.until, false
				}
			}
			delete(e.blocks, oldest)
		}
	}
	e.blocks[k] = b
}

// blockTuple blocks the flow's (client IP, server IP, server port)
// 3-tuple for d: later connections on it get action. e.mu must be held.
func (e *Engine) blockTuple(f *Flow, rule string, action Action, d time.Duration, now time.Time) {
	e.addBlock(blockKey{client: f.Client.Addr().Unmap(), server: f.Server}, block{
		until: now.Add(d), rule: rule, action: action, fail: 1,
	}, now)
}

// blocked returns the number of live entries in the block table, for
// tests.
func (e *Engine) blocked() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.blocks)
}

// spawn runs f in a goroutine the engine owns, unless it is closed. e.mu
// must be held.
func (e *Engine) spawn(f func(ctx context.Context)) bool {
	if e.closed {
		return false
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f(e.ctx)
	}()
	return true
}

// Close stops the engine's active probes and its reference server and
// waits for them. Verdicts keep working after Close, without probing. It
// is idempotent.
func (e *Engine) Close() error {
	e.mu.Lock()
	e.start()
	e.closed = true
	e.cancel()
	ref := e.ref
	e.ref = nil
	e.mu.Unlock()
	e.wg.Wait()
	if ref != nil {
		return ref.close()
	}
	return nil
}
