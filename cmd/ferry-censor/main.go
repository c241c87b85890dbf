// Command ferry-censor is Ferry's censor testbed: a TCP middlebox that
// plays a censor policy (the scenarios of docs/censor.md) on the
// connections it forwards, and logs one JSON line per flow and verdict.
//
//	ferry-censor --listen ADDR --upstream ADDR --policy NAME|FILE [--block ADDR]... [--log FILE] [--seed N] [-v]
//	ferry-censor --forward LISTEN=UPSTREAM... --policy NAME|FILE [flags]
//	ferry-censor policies
//	ferry-censor probe [flags] ADDR   (the active prober on its own; see probe.go)
//
// It is a thin layer over package censor.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ferry-im/ferry/censor"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// subcommands are run by name as the first argument.
var subcommands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) int{
	"policies": policiesMain,
	"probe":    probeMain,
}

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if sub, ok := subcommands[args[0]]; ok {
			return sub(ctx, args[1:], stdout, stderr)
		}
	}
	return serveMain(ctx, args, stdout, stderr)
}

func policiesMain(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "usage: ferry-censor policies")
		return 2
	}
	for _, name := range censor.PolicyNames() {
		p, err := censor.LoadPolicy(name)
		if err != nil {
			fmt.Fprintf(stderr, "ferry-censor: %v\n", err)
			return 1
		}
		desc := p.Description
		if len(desc) > 100 {
			desc = desc[:97] + "..."
		}
		fmt.Fprintf(stdout, "%-18s %s\n", name, desc)
	}
	return 0
}

func serveMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ferry-censor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ferry-censor --listen ADDR --upstream ADDR --policy NAME|FILE [--block ADDR]... [--log FILE] [--seed N] [-v]")
		fmt.Fprintln(stderr, "       ferry-censor --forward LISTEN=UPSTREAM... --policy NAME|FILE [flags]")
		fmt.Fprintln(stderr, "       ferry-censor policies")
		fmt.Fprintln(stderr, "       ferry-censor probe [flags] ADDR   (ferry-censor probe -h for its flags)")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "127.0.0.1:8443", "address to accept connections on")
	upstream := fs.String("upstream", "", "host:port every connection is forwarded to")
	var forwards []forward
	fs.Func("forward", "LISTEN=UPSTREAM: accept on LISTEN and forward to UPSTREAM (repeatable; all share one censor)", func(s string) error {
		l, u, ok := strings.Cut(s, "=")
		if !ok || l == "" || u == "" {
			return errors.New("want LISTEN=UPSTREAM, such as 127.0.0.1:9443=127.0.0.2:443")
		}
		forwards = append(forwards, forward{listen: l, upstream: u})
		return nil
	})
	var blocked []string
	fs.Func("block", "null-route an IP address, range or IP address and port, such as 203.0.113.7:443 (repeatable; added to the policy's ip_block rule)", func(s string) error {
		blocked = append(blocked, s)
		return nil
	})
	policy := fs.String("policy", "open", "a shipped policy's name (see 'ferry-censor policies') or a policy file")
	logPath := fs.String("log", "-", "file the JSON lines of flows and verdicts are appended to; - for standard output")
	seed := fs.Uint64("seed", 0, "seed of the censor's randomness, for reproducible runs; 0 for crypto/rand")
	verbose := fs.Bool("v", false, "log every verdict and probe to standard error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *upstream != "" {
		forwards = append(forwards, forward{listen: *listen, upstream: *upstream})
	}
	if fs.NArg() > 0 || len(forwards) == 0 {
		fs.Usage()
		return 2
	}
	p, err := censor.LoadPolicy(*policy)
	if err == nil && len(blocked) > 0 {
		p = p.WithBlocked(blocked...)
		if verr := p.Validate(); verr != nil {
			err = fmt.Errorf("--block: %w", verr)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "ferry-censor: %v\n", err)
		return 1
	}
	var log io.Writer = stdout
	if *logPath != "-" {
		f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintf(stderr, "ferry-censor: %v\n", err)
			return 1
		}
		defer f.Close()
		log = f
	}
	e := &censor.Engine{Policy: p, Logger: newLogger(stderr, *verbose)}
	if *seed != 0 {
		e.Rand = rand.NewChaCha8(seedKey(*seed))
	}
	if err := serve(ctx, e, forwards, &lockedWriter{w: log}, stderr); err != nil {
		fmt.Fprintf(stderr, "ferry-censor: %v\n", err)
		return 1
	}
	return 0
}

// forward is one --forward pair.
type forward struct{ listen, upstream string }

// serve runs a middlebox for each forward, all deciding with e, until ctx
// is done or one fails, then closes them and e.
func serve(ctx context.Context, e *censor.Engine, forwards []forward, log io.Writer, stderr io.Writer) error {
	defer e.Close()
	e.OnBlock = func(server netip.AddrPort, v censor.Verdict) {
		b, _ := json.Marshal(censor.LogEntry{Time: time.Now().UTC(), Server: server.String(), Rule: v.Rule, Action: v.Action, Evidence: v.Evidence})
		_, _ = log.Write(append(b, '\n'))
	}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for _, f := range forwards {
		ln, err := net.Listen("tcp", f.listen)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	for i, f := range forwards {
		m := &censor.Middlebox{Upstream: f.upstream, Engine: e, Log: log, Logger: e.Logger}
		m.Ready = func() {
			fmt.Fprintf(stderr, "ferry-censor: policy %s, listening on %s, forwarding to %s\n", e.Policy.Name, lns[i].Addr(), f.upstream)
		}
		g.Go(func() error {
			err := m.Serve(ctx, lns[i])
			if cerr := m.Close(); err == nil {
				err = cerr
			}
			return err
		})
	}
	return g.Wait()
}

// lockedWriter serializes the log lines of several middleboxes.
type lockedWriter struct {
	mu sync.Mutex // mu protects w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// seedKey is the ChaCha8 key of a --seed: the seed's little-endian bytes,
// then zeros.
func seedKey(seed uint64) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:8], seed)
	return s
}

// newLogger logs warnings to stderr, or everything with -v.
func newLogger(stderr io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
}
