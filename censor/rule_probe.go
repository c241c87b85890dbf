package censor

import (
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// ProbeRule is active probing after the Great Firewall's: a server that
// received a suspicious first packet (random-looking: one no exemption of
// Wu et al.'s detector covers) is probed with replays of that packet,
// identical and with bytes changed, and with random probes of the
// published lengths, soon (about 0.28 s) and again later; its reactions
// (bytes sent back, FIN, RST or staying open, time to close) are compared
// with a reference web server's, and a server whose reactions differ is
// blocked for every client. Sources: Alice et al., "How China Detects and
// Blocks Shadowsocks", IMC 2020, and Frolov et al., "Detecting
// Probe-resistant Proxies", NDSS 2020 (docs/gfw.md section 3). The
// probes themselves are Prober's.
type ProbeRule struct {
	Match
	// MinFlows is the number of suspicious flows to a server that trigger
	// its probing; 1 when zero (Alice et al. saw a dozen or so suffice).
	MinFlows int `json:"min_flows,omitempty"`
	// Soon is the delay before the first round of probes; 280 ms when
	// zero, the fastest replay Alice et al. saw.
	Soon Duration `json:"soon,omitempty"`
	// Later is the delay, from the trigger, of a second round of probes;
	// no second round when zero ("others hours later").
	Later Duration `json:"later,omitempty"`
	// Reference is the host:port of the web server whose reactions are
	// the norm. If empty, the engine starts a Go net/http server on
	// 127.0.0.1 and uses it.
	Reference string `json:"reference,omitempty"`
	// Action is what happens to later connections to a confirmed server:
	// Drop (the default; a null route) or Reset.
	Action Action `json:"action,omitempty"`
	// BlockFor is how long a confirmed server stays blocked; 24 h when
	// zero.
	BlockFor Duration `json:"block_for,omitempty"`
	// ReadTimeout is how long a probe waits for the server to close; the
	// Prober's default (10 s) when zero.
	ReadTimeout Duration `json:"read_timeout,omitempty"`
}

// The published parameters of active probing.
const (
	ProbeSoon     = 280 * time.Millisecond
	probeBlockFor = 24 * time.Hour
)

func (r *ProbeRule) validate() error {
	if r.MinFlows < 0 {
		return fmt.Errorf("min_flows must not be negative")
	}
	if r.Later != 0 && r.Later.or(0) < r.Soon.or(ProbeSoon) {
		return fmt.Errorf("later %v is before soon %v", time.Duration(r.Later), r.Soon.or(ProbeSoon))
	}
	if r.Reference != "" {
		if _, _, err := net.SplitHostPort(r.Reference); err != nil {
			return fmt.Errorf("reference: %w", err)
		}
	}
	if r.Action != "" {
		if err := r.Action.validIn(Drop, Reset); err != nil {
			return err
		}
	}
	return r.Match.validate()
}

// probeEval counts suspicious flows per server and starts the probing.
type probeEval struct {
	noAdmit
	rule *ProbeRule
	id   string

	servers map[netip.AddrPort]*probeState
}

type probeState struct {
	flows   int
	started time.Time // zero until probing starts
}

func (ev *probeEval) inspect(e *Engine, f *Flow, now time.Time) (Verdict, bool) {
	if f.Kind != KindOther || FETExemption(f.First) != "" {
		return Verdict{}, false
	}
	if _, ok := ev.rule.matchFlow(f); !ok {
		return Verdict{}, false
	}
	if ev.servers == nil {
		ev.servers = make(map[netip.AddrPort]*probeState)
	}
	st := ev.servers[f.Server]
	if st == nil {
		if len(ev.servers) >= e.maxEntries() {
			ev.evict()
		}
		st = &probeState{}
		ev.servers[f.Server] = st
	}
	st.flows++
	if !st.started.IsZero() || st.flows < max(ev.rule.MinFlows, 1) {
		return Verdict{}, false
	}
	st.started = now
	server, first := f.Server, f.First
	e.spawn(func(ctx context.Context) { ev.probe(ctx, e, server, first) })
	return Verdict{}, false
}

// evict forgets the server whose probing started first.
func (ev *probeEval) evict() {
	var oldest netip.AddrPort
	var at time.Time
	first := true
	for s, st := range ev.servers {
		if first || st.started.Before(at) {
			oldest, at, first = s, st.started, false
		}
	}
	delete(ev.servers, oldest)
}

// probe runs the rounds of probes on server and blocks it if it reacts
// unlike the reference.
func (ev *probeEval) probe(ctx context.Context, e *Engine, server netip.AddrPort, first []byte) {
	r := ev.rule
	ref, err := e.reference(r.Reference)
	if err != nil {
		e.logError("start reference server", err)
		return
	}
	clock := e.clock()
	start := clock.Now()
	rounds := []time.Duration{r.Soon.or(ProbeSoon)}
	if r.Later > 0 {
		rounds = append(rounds, time.Duration(r.Later))
	}
	for i, at := range rounds {
		// Two probers with the same random stream send the server and the
		// reference the same probes.
		var seed [32]byte
		if _, err := io.ReadFull(e.prober().Rand, seed[:]); err != nil {
			e.logError("seed probes", err)
			return
		}
		ps, pr := e.prober(), e.prober()
		ps.Rand, pr.Rand = mrand.NewChaCha8(seed), mrand.NewChaCha8(seed)
		for _, p := range []*Prober{ps, pr} {
			p.Soon = max(at-clock.Now().Sub(start), time.Nanosecond)
			p.Later = -1
			if r.ReadTimeout > 0 {
				p.ReadTimeout = time.Duration(r.ReadTimeout)
			}
		}
		var got, want *Report
		var gotErr, wantErr error
		var wg sync.WaitGroup
		wg.Go(func() { got, gotErr = ps.Probe(ctx, server.String(), first) })
		wg.Go(func() { want, wantErr = pr.Probe(ctx, ref, first) })
		wg.Wait()
		if err := errors.Join(gotErr, wantErr); err != nil {
			if ctx.Err() == nil {
				e.logError("probe "+server.String(), err)
			}
			return
		}
		diffs := Differ(got, want)
		if e.Logger != nil {
			e.Logger.Info("censor probed server", "rule", ev.id, "server", server.String(), "round", i+1, "probes", len(got.Reactions), "differences", len(diffs))
		}
		if len(diffs) == 0 {
			continue
		}
		if len(diffs) > 3 {
			diffs = append(diffs[:3:3], fmt.Sprintf("and %d more", len(diffs)-3))
		}
		v := Verdict{
			Rule:     ev.id,
			Action:   cmpAction(r.Action, Drop),
			Evidence: fmt.Sprintf("probe round %d: %s reacts unlike reference %s: %s", i+1, server, ref, strings.Join(diffs, "; ")),
		}
		e.mu.Lock()
		now := clock.Now()
		e.addBlock(blockKey{server: server}, block{until: now.Add(r.BlockFor.or(probeBlockFor)), rule: ev.id, action: v.Action, fail: 1, evidence: v.Evidence}, now)
		e.mu.Unlock()
		e.logged(v)
		if e.OnBlock != nil {
			e.OnBlock(server, v)
		}
		return
	}
}

// prober returns a copy of the engine's Prober with its time and
// randomness defaulted to the engine's.
func (e *Engine) prober() *Prober {
	var p Prober
	if e.Prober != nil {
		p = *e.Prober
	}
	if p.Rand == nil {
		p.Rand = engineRand{e}
	}
	if p.Now == nil {
		p.Now = e.clock().Now
	}
	if p.Sleep == nil {
		p.Sleep = e.clock().Sleep
	}
	return &p
}

// engineRand reads the engine's Rand under its lock, so the probes and
// the verdicts can share one seeded source.
type engineRand struct{ e *Engine }

func (r engineRand) Read(b []byte) (int, error) {
	r.e.mu.Lock()
	defer r.e.mu.Unlock()
	for i := 0; i < len(b); i += 8 {
		v := r.e.rnd.uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return len(b), nil
}

func (e *Engine) logError(what string, err error) {
	if e.Logger != nil {
		e.Logger.Warn("censor: "+what, "err", err)
	}
}

// reference returns addr, or the address of the engine's own reference
// web server, started on first use.
func (e *Engine) reference(addr string) (string, error) {
	if addr != "" {
		return addr, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return "", errors.New("engine closed")
	}
	if e.ref == nil {
		ref, err := startRefServer()
		if err != nil {
			return "", err
		}
		e.ref = ref
	}
	return e.ref.addr, nil
}

// refServer is a stock Go net/http server on loopback: the "common web
// server" whose reactions to probes are the norm.
type refServer struct {
	srv  *http.Server
	addr string
	done chan error
}

// refPage is what the reference server serves.
const refPage = "<!doctype html><title>Welcome</title><p>It works.\n"

func startRefServer() (*refServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	r := &refServer{
		srv: &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				_, _ = w.Write([]byte(refPage))
			}),
			ReadHeaderTimeout: 30 * time.Second,
		},
		addr: ln.Addr().String(),
		done: make(chan error, 1),
	}
	go func() { r.done <- r.srv.Serve(ln) }()
	return r, nil
}

func (r *refServer) close() error {
	err := r.srv.Close()
	if serr := <-r.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
