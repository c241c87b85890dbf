package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-im/ferry/internal/load"
	"github.com/ferry-im/ferry/link"
)

// options are the command's flags.
type options struct {
	relays, metrics       listFlag
	conns, messages       int
	rate                  float64
	json                  bool
	procs, senders        int
	window, size, sources int
	parallel              int
	hold, timeout         time.Duration
	level                 string
	child                 int    // >= 0 in a child process
	seed                  string // hex, shared by a run's processes
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

const usage = `Usage:
  ferry-load --relay LINK --conns N --messages M [--rate R] [--json] [flags]

Flags:
`

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fl := flag.NewFlagSet("ferry-load", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Var(&o.relays, "relay", "the relay's `LINK` (repeat to add endpoints of the same key)")
	fl.IntVar(&o.conns, "conns", 100, "`N` connections (users), each subscribed to its mailbox")
	fl.IntVar(&o.messages, "messages", 10000, "`M` messages to send in all (0: only connect and hold)")
	fl.Float64Var(&o.rate, "rate", 0, "send `R` messages per second in all (0: each sender as fast as acknowledged)")
	fl.BoolVar(&o.json, "json", false, "print one JSON object")
	fl.IntVar(&o.procs, "procs", 1, "split the users over `P` processes")
	fl.IntVar(&o.senders, "senders", 64, "`S` senders per process (users that send)")
	fl.IntVar(&o.window, "window", 1, "`W` Sends in flight per sender")
	fl.IntVar(&o.size, "size", 512, "envelope size in `BYTES`")
	fl.IntVar(&o.parallel, "parallel", 64, "set up `K` connections at once per process")
	fl.IntVar(&o.sources, "sources", 0, "`K` loopback source addresses per process (0: one per 64 users; -1: let the system pick)")
	fl.DurationVar(&o.hold, "hold", 0, "keep the connections open, idle, this `DURATION` after the messages")
	fl.DurationVar(&o.timeout, "timeout", 10*time.Minute, "stop after this `DURATION` (not counting --hold)")
	fl.Var(&o.metrics, "metrics", "a relay's metrics `URL` http://ADDR/metrics, for its RSS and CPU (repeat per relay)")
	fl.StringVar(&o.level, "log-level", "warn", "log `LEVEL` on standard error: debug, info, warn or error")
	fl.IntVar(&o.child, "child", -1, "internal: run as process `P` of --procs")
	fl.StringVar(&o.seed, "seed", "", "internal: the run's `HEX` seed")
	fl.Usage = func() {
		fmt.Fprint(stderr, usage)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fl.NArg() > 0:
		return nil, fmt.Errorf("unexpected argument %q", fl.Arg(0))
	case len(o.relays) == 0:
		return nil, errors.New("no --relay: pass the relay's link (ferry-relay prints it)")
	case o.procs < 1 || o.conns < 2*o.procs:
		return nil, fmt.Errorf("--conns %d over --procs %d: want at least 2 connections per process", o.conns, o.procs)
	case o.messages < 0 || o.rate < 0 || o.window < 1 || o.senders < 1:
		return nil, errors.New("--messages, --rate, --window and --senders must not be negative (window and senders at least 1)")
	}
	return o, nil
}

// config builds this process's load configuration.
func (o *options) config(proc int, log *slog.Logger) (load.Config, error) {
	var key [32]byte
	var eps []link.Endpoint
	for i, text := range o.relays {
		r, err := link.ParseRelay(text)
		if err != nil {
			return load.Config{}, fmt.Errorf("--relay: %w", err)
		}
		if i > 0 && r.Key != key {
			return load.Config{}, errors.New("--relay: the links have different keys; give the links of one relay or cluster")
		}
		key = r.Key
		eps = append(eps, r.Endpoints...)
	}
	seed, err := hex.DecodeString(o.seed)
	if err != nil || len(seed) != 32 {
		return load.Config{}, errors.New("--seed: want 64 hex digits")
	}
	plan := load.Plan{Seed: [32]byte(seed), Users: o.conns, Procs: o.procs, Senders: o.senders, Messages: o.messages}
	users := plan.Lo(proc+1) - plan.Lo(proc)
	return load.Config{
		Plan: plan, Proc: proc, Relay: key, Endpoints: eps, Sources: sources(proc, o.sources, users),
		Rate: o.rate, Window: o.window, Size: o.size, Timeout: o.timeout, Hold: o.hold, Logger: log,
		Parallel: o.parallel,
	}, nil
}

// sources returns process proc's loopback source addresses: 127.(10+proc).x.y.
func sources(proc, n, users int) []netip.Addr {
	if n < 0 {
		return nil
	}
	if n == 0 {
		n = users/64 + 1
	}
	out := make([]netip.Addr, 0, n)
	for j := range n {
		out = append(out, netip.AddrFrom4([4]byte{127, byte(10 + proc), byte(j / 254), byte(j%254 + 1)}))
	}
	return out
}

// run is the whole command, with its environment passed in for tests.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.level)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	raiseFileLimit()
	if o.child >= 0 {
		return runChild(ctx, o, stdin, stdout, log)
	}
	if o.seed == "" {
		var s [32]byte
		rand.Read(s[:])
		o.seed = hex.EncodeToString(s[:])
	}
	started := time.Now()
	var res load.Result
	var relays relayStats
	if o.procs == 1 {
		res, relays, err = runHere(ctx, o, log)
	} else {
		res, relays, err = runProcs(ctx, o, args, stderr)
	}
	if err != nil {
		return err
	}
	return report(stdout, o, res, relays, time.Since(started))
}

// runHere runs the whole load in this process.
func runHere(ctx context.Context, o *options, log *slog.Logger) (load.Result, relayStats, error) {
	cfg, err := o.config(0, log)
	if err != nil {
		return load.Result{}, relayStats{}, err
	}
	w := newWatcher(ctx, o.metrics)
	cfg.Ready = w.start
	res, err := load.Run(ctx, cfg)
	return res, w.stop(), err
}

// runChild is one process of a --procs run: it says "ready" once its
// users are connected, starts sending at "go", and prints its result as
// JSON.
func runChild(ctx context.Context, o *options, stdin io.Reader, stdout io.Writer, log *slog.Logger) error {
	cfg, err := o.config(o.child, log)
	if err != nil {
		return err
	}
	start := make(chan struct{})
	cfg.Ready = func() { fmt.Fprintln(stdout, "ready") }
	cfg.Start = start
	go func() {
		line, _ := bufio.NewReader(stdin).ReadString('\n')
		if strings.TrimSpace(line) == "go" {
			close(start)
		}
	}()
	res, err := load.Run(ctx, cfg)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(res)
}

// child is a running child process.
type child struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines *bufio.Scanner
}

// runProcs runs the load in --procs child processes and adds up their
// results.
func runProcs(ctx context.Context, o *options, args []string, stderr io.Writer) (load.Result, relayStats, error) {
	exe, err := os.Executable()
	if err != nil {
		return load.Result{}, relayStats{}, err
	}
	var children []*child
	defer func() {
		for _, c := range children {
			c.in.Close()
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
	}()
	for p := range o.procs {
		c, err := startChild(ctx, exe, append(args, "--child", strconv.Itoa(p), "--seed", o.seed), stderr)
		if err != nil {
			return load.Result{}, relayStats{}, err
		}
		children = append(children, c)
	}
	for p, c := range children {
		if !c.lines.Scan() || c.lines.Text() != "ready" {
			return load.Result{}, relayStats{}, fmt.Errorf("process %d did not get ready (see its errors above)", p)
		}
	}
	w := newWatcher(ctx, o.metrics)
	w.start()
	for _, c := range children {
		fmt.Fprintln(c.in, "go")
	}
	var total load.Result
	for p, c := range children {
		var res load.Result
		if !c.lines.Scan() {
			return load.Result{}, relayStats{}, fmt.Errorf("process %d ended without a result", p)
		}
		if err := json.Unmarshal(c.lines.Bytes(), &res); err != nil {
			return load.Result{}, relayStats{}, fmt.Errorf("process %d's result: %w", p, err)
		}
		total.Merge(res)
	}
	return total, w.stop(), nil
}

func startChild(ctx context.Context, exe string, args []string, stderr io.Writer) (*child, error) {
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start a load process: %w", err)
	}
	lines := bufio.NewScanner(out)
	lines.Buffer(make([]byte, 1<<16), 1<<24)
	return &child{cmd: cmd, in: in, lines: lines}, nil
}

// relayStats is what the relays' metrics showed during the run.
type relayStats struct {
	RSS      float64 // the most, summed over the relays
	Conns    float64 // the most connections they served at once
	CPU      float64 // CPU seconds spent from the start of sending
	Err      error
	measured bool
}

// watcher samples the relays' metrics every second from start to stop.
type watcher struct {
	urls   []string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	// mu protects first and stats.
	mu    sync.Mutex
	first *load.Sample
	stats relayStats
}

func newWatcher(ctx context.Context, urls []string) *watcher {
	ctx, cancel := context.WithCancel(ctx)
	return &watcher{urls: urls, ctx: ctx, cancel: cancel}
}

// start begins sampling (once).
func (w *watcher) start() {
	if len(w.urls) == 0 {
		return
	}
	w.once.Do(func() { w.wg.Go(w.loop) })
}

func (w *watcher) loop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		w.sample()
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sample scrapes the relays once and records what they said.
func (w *watcher) sample() {
	s, err := load.ScrapeAll(w.ctx, w.urls)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if w.ctx.Err() == nil {
			w.stats.Err = err
		}
		return
	}
	if w.first == nil {
		w.first = &s
	}
	w.stats.measured = true
	w.stats.RSS = max(w.stats.RSS, s.RSS)
	w.stats.Conns = max(w.stats.Conns, s.Conns)
	w.stats.CPU = s.CPU - w.first.CPU
}

// stop takes a last sample and returns what was seen.
func (w *watcher) stop() relayStats {
	if len(w.urls) > 0 {
		w.sample()
	}
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}
