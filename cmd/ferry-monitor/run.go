package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/monitor/dashboard"
	"github.com/ferry-im/ferry/monitor/history"
	"github.com/ferry-im/ferry/monitor/probe"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/proxy"
)

// runFlags are the flags of run.
type runFlags struct {
	data, vantage, control, proxy, ooni, listen, logLevel, secretFile, rankingKey string
	links, features, webhooks, networks, mediaSizes                               []string
	interval, duration, timeout, residual, mediaBudget, quiet                     time.Duration
}

func (f *runFlags) define(args []string, stderr io.Writer) (int, *runFlags) {
	fs, data := newFlags("run", "--data DIR --link LINK [--link LINK]... [--interval D] [--for D] [flags]", stderr)
	multi := func(name, help string, dst *[]string) {
		fs.Func(name, help, func(s string) error { *dst = append(*dst, s); return nil })
	}
	multi("link", "a relay's link, as 'ferry-relay link' prints it (repeatable); every endpoint of a known transport is probed", &f.links)
	multi("feature", "what to probe (repeatable): text (the relay protocol's round trip, the default), client_text (the same through the whole client library), media_put and media_get (attachments' upload and download)", &f.features)
	multi("media-size", "an attachment size of media_put and media_get (repeatable; default 100KB, 1MB and 10MB)", &f.mediaSizes)
	fs.DurationVar(&f.mediaBudget, "media-budget", 80*time.Second, "longest a media trial's transfers take; a transfer still moving then counts at the rate it reached")
	multi("webhook", "URL posted a JSON event on every change of state (repeatable)", &f.webhooks)
	fs.StringVar(&f.secretFile, "webhook-secret-file", "", "file whose content signs the webhook posts (X-Ferry-Signature: sha256=HMAC)")
	fs.StringVar(&f.rankingKey, "ranking-key", "", "publish this vantage's transport ranking to the relay, signed with this key file ('ferry-monitor ranking-key' makes it)")
	multi("network", "an address prefix of this vantage's network (CIDR, repeatable) for the ranking; default: the /24 or /48 the relay sees", &f.networks)
	fs.DurationVar(&f.interval, "interval", 5*time.Minute, "time between two trials of a cell (varied by 20% at random)")
	fs.DurationVar(&f.quiet, "quiet", 6*time.Minute, "how long an intermittent cell must go without a failure to read ok again: longer than the censor's up periods (or they read ok), shorter to see the end of an outage sooner (docs/monitor.md section 5)")
	fs.DurationVar(&f.duration, "for", 0, "stop after this long (0: until SIGINT or SIGTERM)")
	fs.DurationVar(&f.timeout, "timeout", 2*time.Minute, "longest trial")
	fs.DurationVar(&f.residual, "residual", 190*time.Second, "wait before the post control after a failed trial, when the control shares the relay's address (past a censor's residual block)")
	fs.StringVar(&f.vantage, "vantage", "default", "name of where this monitor runs (its network), shown with every cell")
	fs.StringVar(&f.control, "control", "https://www.example.com/", "a page of a neutral reference site reached through the same path as the trials; 'none' for no control")
	fs.StringVar(&f.proxy, "proxy", "", "upstream proxy for every connection: socks5://[user:pass@]host:port or http://host:port")
	fs.StringVar(&f.ooni, "ooni", "", "file the measurements are appended to as OONI JSON lines (default DIR/measurements.jsonl; - for standard output; none)")
	fs.StringVar(&f.listen, "listen", "", "serve the dashboard and /metrics at this address while running (e.g. 127.0.0.1:9290)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error (logs go to standard error)")
	code := parse(fs, args)
	f.data = *data
	return code, f
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	code, f := (&runFlags{}).define(args, stderr)
	if code >= 0 {
		return code
	}
	if len(f.links) == 0 {
		return fail(stderr, "give the relay to probe with --link (its link, from 'ferry-relay link')")
	}
	log, err := newLogger(f.logLevel, stderr)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	if err := os.MkdirAll(f.data, 0o700); err != nil {
		return fail(stderr, "the data directory cannot be made (%v): choose another with --data", err)
	}
	nd, err := f.netDialer()
	if err != nil {
		return fail(stderr, "%v", err)
	}
	targets, err := f.targets(log, nd)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	db, err := history.Open(ctx, filepath.Join(f.data, history.FileName))
	if err != nil {
		return fail(stderr, "the history cannot be opened (%v): check %s", err, f.data)
	}
	defer db.Close()
	metrics := monitor.NewMetrics()
	sinks, closeSinks, err := f.sinks(stdout, log, metrics)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer closeSinks()
	if sinks, err = f.publisher(sinks, nd, log); err != nil {
		return fail(stderr, "%v", err)
	}
	r, err := monitor.NewRunner(monitor.Config{
		Targets: targets, Interval: f.interval, Timeout: f.timeout, Residual: f.residual,
		Thresholds: monitor.Thresholds{Quiet: f.quiet}, Store: db, Sinks: sinks, Logger: log,
	})
	if err != nil {
		return fail(stderr, "%v", err)
	}
	if err := r.Restore(ctx); err != nil {
		log.Warn("the history could not be replayed; states start afresh", "err", err)
	}
	if f.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	stopServe, err := f.serve(ctx, db, metrics, log)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer stopServe()
	log.Info("monitor running", "cells", len(targets), "interval", f.interval)
	r.Run(ctx)
	return exitOK
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// netDialer returns the raw dialer: direct, or through --proxy.
func (f *runFlags) netDialer() (transport.NetDialer, error) {
	if f.proxy == "" {
		return &net.Dialer{}, nil
	}
	return proxy.FromURL(f.proxy, nil)
}

// parseLinks parses the --link flags.
func (f *runFlags) parseLinks() ([]link.Relay, error) {
	var links []link.Relay
	for _, s := range f.links {
		r, err := link.ParseRelay(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("a --link is not a relay link (%v): copy it again from 'ferry-relay link'", err)
		}
		links = append(links, r)
	}
	return links, nil
}

// targets parses the links and makes the cells' probes.
func (f *runFlags) targets(log *slog.Logger, nd transport.NetDialer) ([]monitor.Target, error) {
	links, err := f.parseLinks()
	if err != nil {
		return nil, err
	}
	cfg := probe.TargetsConfig{
		Dir: filepath.Join(f.data, "probes"), Vantage: f.vantage, Links: links,
		Features: f.features, NetDialer: nd, MediaBudget: f.mediaBudget,
	}
	for _, s := range f.mediaSizes {
		n, err := probe.ParseSize(s)
		if err != nil {
			return nil, fmt.Errorf("--media-size: %w", err)
		}
		cfg.MediaSizes = append(cfg.MediaSizes, n)
	}
	if (slices.Contains(f.features, monitor.FeatureMediaPut) || slices.Contains(f.features, monitor.FeatureMediaGet)) && f.mediaBudget >= f.timeout {
		return nil, fmt.Errorf("--media-budget %v must be below --timeout %v: raise --timeout or lower the budget", f.mediaBudget, f.timeout)
	}
	if f.control != "none" {
		cfg.Control = &probe.ControlConfig{URL: f.control}
	}
	targets, warnings, err := probe.Targets(cfg)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	return targets, nil
}

// sinks returns the OONI writer, the metrics and the webhooks, and a
// function that closes the OONI file.
func (f *runFlags) sinks(stdout io.Writer, log *slog.Logger, metrics *monitor.Metrics) ([]monitor.Sink, func(), error) {
	sinks := []monitor.Sink{metrics}
	closer := func() {}
	switch f.ooni {
	case "none":
	case "-":
		sinks = append(sinks, &monitor.OONIWriter{W: stdout})
	default:
		path := f.ooni
		if path == "" {
			path = filepath.Join(f.data, "measurements.jsonl")
		}
		file, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("the measurements file cannot be opened (%v): choose another with --ooni", err)
		}
		sinks = append(sinks, &monitor.OONIWriter{W: file})
		closer = func() { file.Close() }
	}
	var secret []byte
	if f.secretFile != "" {
		b, err := os.ReadFile(f.secretFile)
		if err != nil {
			closer()
			return nil, nil, fmt.Errorf("the webhook secret cannot be read (%v): check --webhook-secret-file", err)
		}
		secret = []byte(strings.TrimSpace(string(b)))
	}
	for _, u := range f.webhooks {
		sinks = append(sinks, &monitor.Webhook{URL: u, Secret: secret, Logger: log})
	}
	return sinks, closer, nil
}

// serve serves the dashboard and /metrics on --listen until stop.
func (f *runFlags) serve(ctx context.Context, db *history.DB, metrics *monitor.Metrics, log *slog.Logger) (stop func(), err error) {
	if f.listen == "" {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", f.listen)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s (%v): choose another --listen address", f.listen, err)
	}
	srv := &http.Server{Handler: dashboard.Handler(dashboard.Config{Source: db, Metrics: metrics.Handler()}), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("dashboard stopped", "err", err)
		}
	}()
	log.Info("dashboard", "url", "http://"+l.Addr().String()+"/")
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-done
	}, nil
}

// publisher adds the ranking publisher of --ranking-key to sinks.
func (f *runFlags) publisher(sinks []monitor.Sink, nd transport.NetDialer, log *slog.Logger) ([]monitor.Sink, error) {
	if f.rankingKey == "" {
		return sinks, nil
	}
	key, cert, static, err := loadRankingKey(f.rankingKey)
	if err != nil {
		return nil, err
	}
	var nets []netip.Prefix
	for _, s := range f.networks {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--network %q is not an address prefix such as 203.0.113.0/24", s)
		}
		nets = append(nets, p.Masked())
	}
	links, err := f.parseLinks()
	if err != nil {
		return nil, err
	}
	for _, r := range links {
		if r.Key != cert.RelayKey {
			continue
		}
		p, err := probe.NewPublisher(probe.PublisherConfig{
			Relay: r, Key: key, Cert: cert, Static: static, Vantage: f.vantage, Networks: nets,
			Every: f.interval, NetDialer: nd, Logger: log,
		})
		if err != nil {
			return nil, err
		}
		return append(sinks, p), nil
	}
	return nil, errors.New("the ranking key is certified by a relay none of the --link flags names: make it on that relay's machine")
}
