package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/version"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/relay"
)

// Files in the data directory.
const (
	keyFile       = "relay.key"  // base64url private key, one line, mode 0600
	dbFile        = "relay.db"   // the SQLite store
	endpointsFile = "endpoints"  // the link's endpoints, one per line as in a link
	defaultData   = "ferry-data" // relative to the working directory
	shutdownGrace = 10 * time.Second
)

// defaultListen is where a relay started without --listen listens: every
// transport of its own, on loopback, so that its link already holds the
// ones a censor cannot single out (docs/transports.md) beside plain tcp.
var defaultListen = []string{"tcp=127.0.0.1:7443", "obfs=127.0.0.1:7444", "https=127.0.0.1:7445"}

const usage = `Usage:
  ferry-relay [flags]               run the relay; prints its link on stdout
  ferry-relay link [--data DIR] [--wait D] [--store URL | --config FILE]
                                    print the running relay's link again (a cluster's: every node's endpoints)
  ferry-relay recover [--data DIR]  rebuild a damaged SQLite database from what can still be read
  ferry-relay help                  print this help
  ferry-relay --version             print the version

Flags:
`

// run is the whole command, with its environment passed in for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "link":
			return runLink(ctx, args[1:], stdout, stderr)
		case "recover":
			return runRecover(ctx, args[1:], stdout, stderr)
		case "help":
			return runServe(ctx, []string{"--help"}, stdout, stdout)
		case "--version", "-version":
			fmt.Fprintln(stdout, version.String("ferry-relay"))
			return nil
		}
	}
	return runServe(ctx, args, stdout, stderr)
}

// runLink prints the link of the relay running with the data directory,
// waiting for it to listen. It reads the endpoints only from the file the
// running relay (the holder of the directory's lock) wrote, never from an
// earlier run's, so it never prints a wrong link.
func runLink(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("ferry-relay link", flag.ContinueOnError)
	fl.SetOutput(stderr)
	data := fl.String("data", defaultData, "`DIR` holding the relay's key and database")
	storeOpts := addStoreFlags(fl)
	wait := fl.Duration("wait", 10*time.Second, "how long to wait for the relay to start listening")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("link: unexpected argument %q", fl.Arg(0))
	}
	if err := storeOpts.applyConfig(fl); err != nil {
		return err
	}
	eps, err := runningEndpoints(ctx, *data, *wait)
	if err != nil {
		return err
	}
	key, err := loadKey(*data)
	if err != nil {
		return err
	}
	if isPostgres(storeOpts.store) {
		if eps, err = storeOpts.clusterLink(ctx, eps); err != nil {
			return err
		}
	}
	fmt.Fprintln(stdout, link.Relay{Key: key.Public, Endpoints: eps})
	return nil
}

// runningEndpoints returns the endpoints the relay running with dir
// serves, waiting up to wait for it to write them.
func runningEndpoints(ctx context.Context, dir string, wait time.Duration) ([]link.Endpoint, error) {
	deadline := time.Now().Add(wait)
	for {
		pid := lockHolder(dir)
		if pid != 0 {
			if owner, eps, err := loadEndpoints(dir); err == nil && (owner == pid || pid < 0) {
				return eps, nil
			}
		}
		if time.Now().After(deadline) {
			if pid == 0 {
				return nil, fmt.Errorf("no ferry-relay is running with --data %s; start it, then run ferry-relay link again", dir)
			}
			return nil, fmt.Errorf("the ferry-relay running with --data %s did not start listening within %v", dir, wait)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("ferry-relay", flag.ContinueOnError)
	fl.SetOutput(stderr)
	data := fl.String("data", defaultData, "`DIR` holding the relay's key and database (created if missing)")
	transports := serverTransports()
	listen, public := listenList{known: transports}, listenList{known: transports}
	fl.Var(&listen, "listen", "`TRANSPORT=HOST:PORT` to listen on, once per transport (default "+strings.Join(defaultListen, " ")+")")
	fl.Var(&public, "public", "`TRANSPORT=HOST:PORT` to put in the link instead of the listening address of that transport")
	for _, t := range transports {
		if t.flags != nil {
			t.flags(fl)
		}
	}
	level := fl.String("log-level", "info", "log `LEVEL`: debug, info, warn or error")
	metricsAddr := fl.String("metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics (off if empty)")
	var publishers [][32]byte
	fl.Func("ranking-publisher", "the `KEY` (base64url) a monitor publishes transport rankings with, as 'ferry-monitor ranking-key' prints it (repeatable)", func(s string) error {
		b, err := base64.RawURLEncoding.Strict().DecodeString(s)
		if err != nil || len(b) != 32 {
			return errors.New("want the 43-character key 'ferry-monitor ranking-key' printed")
		}
		publishers = append(publishers, [32]byte(b))
		return nil
	})
	storeOpts := addStoreFlags(fl)
	newDatabase := fl.Bool("new-database", false, "start with an empty database although this data directory ran a relay before (the old file, if any, is kept aside)")
	budgets := budgetFlags(fl)
	blobOpts := addBlobFlags(fl)
	fl.Usage = func() {
		fmt.Fprint(stderr, usage)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return err
	}
	if err := storeOpts.applyConfig(fl); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (did you mean \"ferry-relay link\"?)", fl.Arg(0))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", *level)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	if len(listen.specs) == 0 {
		for _, v := range defaultListen {
			if err := listen.Set(v); err != nil {
				return err
			}
		}
	}
	for _, p := range public.specs {
		if !slices.ContainsFunc(listen.specs, func(l listenSpec) bool { return l.transport == p.transport }) {
			return fmt.Errorf("--public %s=%s: the relay does not listen on %s (add --listen %s=HOST:PORT)", p.transport, p.addr, p.transport, p.transport)
		}
	}

	raiseFileLimit()
	release, err := claimData(*data)
	if err != nil {
		return err
	}
	defer release()
	db := dbPolicy{ranBefore: hasKey(*data), newDatabase: *newDatabase, warn: log.Warn}
	key, err := loadOrCreateKey(*data)
	if err != nil {
		return err
	}
	back, err := storeOpts.openBackend(ctx, *data, key, log, db)
	if err != nil {
		return err
	}
	defer back.close()
	blobs, err := blobOpts.open(ctx, *data, storeOpts.store)
	if err != nil {
		return err
	}
	if blobs != nil {
		defer blobs.Close()
	}
	srv, err := relay.NewServer(relay.Config{Key: key, Store: back.store, Logger: log, Bus: back.bus, Budgets: budgets(), RankingPublishers: publishers, Blobs: blobs})
	if err != nil {
		return err
	}
	defer srv.Close()
	srv.Registry().MustRegister(back.stats...)

	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	env := serverEnv{dataDir: *data, log: log}
	var eps []link.Endpoint
	for _, spec := range listen.specs {
		l, ep, err := listenOn(ctx, env, findTransport(transports, spec.transport), spec, public.specs)
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
		eps = append(eps, ep)
	}
	if err := saveEndpoints(*data, eps); err != nil {
		return err
	}
	if storeOpts.node == "" {
		storeOpts.node = defaultNode(eps)
	}
	linkEps, err := back.linkEndpoints(ctx, storeOpts.node, eps, log)
	if err != nil {
		return err
	}

	var metricsSrv *http.Server
	if *metricsAddr != "" {
		ml, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			return fmt.Errorf("listen for metrics on %s: %w", *metricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(srv.Registry(), promhttp.HandlerOpts{}))
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go metricsSrv.Serve(ml)
		log.Info("serving metrics", "addr", ml.Addr().String())
	}

	fmt.Fprintln(stdout, link.Relay{Key: key.Public, Endpoints: linkEps})

	var wg sync.WaitGroup
	for _, l := range listeners {
		wg.Go(func() { accept(ctx, l, srv, log) })
	}
	<-ctx.Done()
	log.Info("shutting down")
	for _, l := range listeners {
		l.Close()
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if metricsSrv != nil {
		metricsSrv.Shutdown(sctx)
	}
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	wg.Wait()
	if err := back.close(); err != nil {
		return fmt.Errorf("close database: %w", err)
	}
	log.Info("stopped")
	return nil
}

// listenOn listens on spec's address with transport t and returns the
// transport's listener and the endpoint for the link: at the listening
// address, or at the --public address given for the transport.
func listenOn(ctx context.Context, env serverEnv, t *serverTransport, spec listenSpec, public []listenSpec) (net.Listener, link.Endpoint, error) {
	srv, err := t.new(env)
	if err != nil {
		return nil, link.Endpoint{}, fmt.Errorf("set up %s: %w", t.name, err)
	}
	raw, err := (&net.ListenConfig{KeepAlive: 30 * time.Second}).Listen(ctx, "tcp", spec.addr)
	if err != nil {
		return nil, link.Endpoint{}, fmt.Errorf("listen %s=%s: %w", spec.transport, spec.addr, err)
	}
	addr := raw.Addr().String()
	env.log.Info("listening", "transport", t.name, "addr", addr)
	i := slices.IndexFunc(public, func(p listenSpec) bool { return p.transport == t.name })
	if i >= 0 {
		addr = public[i].addr
	} else if raw.Addr().(*net.TCPAddr).IP.IsUnspecified() {
		env.log.Warn("listening on all addresses; the link needs a reachable one: pass --public", "transport", t.name, "addr", addr)
	}
	ep := srv.Endpoint(addr)
	if err := ep.Check(); err != nil {
		raw.Close()
		return nil, link.Endpoint{}, fmt.Errorf("endpoint for the link: %w", err)
	}
	return srv.Listener(raw), ep, nil
}

// accept hands every connection of l to srv until l is closed. It returns
// once the connections it started are done (Server.Shutdown ends them).
func accept(ctx context.Context, l net.Listener, srv *relay.Server, log *slog.Logger) {
	var conns sync.WaitGroup
	defer conns.Wait()
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			log.Warn("accept", "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		conns.Go(func() { srv.ServeConn(context.Background(), c) })
	}
}

// loadOrCreateKey reads the relay key from dir, creating dir and the key
// on first start.
func loadOrCreateKey(dir string) (channel.KeyPair, error) {
	key, err := loadKey(dir)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return channel.KeyPair{}, fmt.Errorf("create data directory: %w", err)
	}
	key, err = channel.GenerateKeyPair(rand.Reader)
	if err != nil {
		return channel.KeyPair{}, err
	}
	text := base64.RawURLEncoding.EncodeToString(key.Private[:]) + "\n"
	if err := createPrivateFile(filepath.Join(dir, keyFile), []byte(text)); err != nil {
		return channel.KeyPair{}, fmt.Errorf("write relay key: %w", err)
	}
	return key, nil
}

// createPrivateFile creates path, which must not exist, with mode 0600
// and writes and syncs data; on failure it removes what it created.
func createPrivateFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// loadKey reads the relay key from dir.
func loadKey(dir string) (channel.KeyPair, error) {
	path := filepath.Join(dir, keyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return channel.KeyPair{}, fmt.Errorf("no relay key in %s (start ferry-relay with --data %s first): %w", dir, dir, err)
	}
	if err != nil {
		return channel.KeyPair{}, fmt.Errorf("read relay key: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return channel.KeyPair{}, fmt.Errorf("relay key %s is readable by others (mode %v); run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != 32 {
		return channel.KeyPair{}, fmt.Errorf("relay key %s is damaged", path)
	}
	return channel.NewKeyPair([32]byte(raw))
}

// claimData makes the data directory this process's: it creates it,
// locks it against a second relay, and removes an earlier run's endpoints
// (a crash leaves them; they are not this run's). release unlocks it and
// removes this run's endpoints.
func claimData(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	unlock, err := lockData(dir)
	if errors.Is(err, errLocked) {
		return nil, fmt.Errorf("another ferry-relay is running with --data %s", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	endpoints := filepath.Join(dir, endpointsFile)
	os.Remove(endpoints)
	return func() {
		os.Remove(endpoints)
		unlock()
	}, nil
}

// saveEndpoints writes the link's endpoints, after a first line naming
// the process that serves them.
func saveEndpoints(dir string, eps []link.Endpoint) error {
	var b strings.Builder
	fmt.Fprintf(&b, "pid %d\n", os.Getpid())
	for _, e := range eps {
		b.WriteString(e.String())
		b.WriteByte('\n')
	}
	tmp := filepath.Join(dir, endpointsFile+".tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("save endpoints: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, endpointsFile)); err != nil {
		return fmt.Errorf("save endpoints: %w", err)
	}
	return nil
}

// loadEndpoints returns the endpoints the running relay serves and its
// process id, as saveEndpoints wrote them.
func loadEndpoints(dir string) (pid int, eps []link.Endpoint, err error) {
	b, err := os.ReadFile(filepath.Join(dir, endpointsFile))
	if err != nil {
		return 0, nil, fmt.Errorf("read endpoints: %w", err)
	}
	first, rest, _ := strings.Cut(string(b), "\n")
	if _, err := fmt.Sscanf(first, "pid %d", &pid); err != nil {
		return 0, nil, errors.New("read endpoints: no pid line")
	}
	for _, line := range strings.Fields(rest) {
		e, err := link.ParseEndpoint(line)
		if err != nil {
			return 0, nil, fmt.Errorf("read endpoints: %w", err)
		}
		eps = append(eps, e)
	}
	if len(eps) == 0 {
		return 0, nil, fmt.Errorf("read endpoints: %s is empty", filepath.Join(dir, endpointsFile))
	}
	return pid, eps, nil
}
