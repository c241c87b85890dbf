package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ferry-im/ferry/relay/relaytest"
)

// startRelay runs a relay in this process with its metrics (which include
// this process's RSS and CPU) on an HTTP server, as ferry-relay --metrics.
func startRelay(t *testing.T) (linkText, metricsURL string) {
	r := relaytest.Start(t, nil) // its registry has the process's metrics
	hs := httptest.NewServer(promhttp.HandlerFor(r.Server.Registry(), promhttp.HandlerOpts{}))
	t.Cleanup(hs.Close)
	return r.Link.String(), hs.URL + "/metrics"
}

func decode(t *testing.T, out []byte) jsonReport {
	t.Helper()
	var r jsonReport
	if err := json.Unmarshal(out, &r); err != nil || bytes.Count(out, []byte("\n")) != 1 {
		t.Fatalf("--json printed %q: %v; want one JSON object on one line", out, err)
	}
	return r
}

// TestJSON runs a small load in this process and checks the report the
// issue asks for: throughput, latency quantiles, errors and relay RSS.
func TestJSON(t *testing.T) {
	linkText, metrics := startRelay(t)
	var out, errs bytes.Buffer
	err := run(context.Background(), []string{"--relay", linkText, "--conns", "20", "--messages", "300",
		"--senders", "5", "--json", "--metrics", metrics}, strings.NewReader(""), &out, &errs)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, errs.String())
	}
	r := decode(t, out.Bytes())
	if r.Received != 300 || r.Sent != 300 || r.Errors != 0 || r.Conns != 20 {
		t.Fatalf("report %+v, want 20 connections and 300 messages sent and received without errors", r)
	}
	if r.MsgsPerS <= 0 || r.P50ms <= 0 || r.P99ms < r.P50ms || r.P999ms < r.P99ms || r.RelayRSS <= 0 || r.RelayConns < 20 {
		t.Fatalf("report %+v: want throughput, increasing latency quantiles, relay RSS and connections", r)
	}
}

// TestProcs runs the built binary with two load processes.
func TestProcs(t *testing.T) {
	linkText, _ := startRelay(t)
	bin := filepath.Join(t.TempDir(), "ferry-load")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--relay", linkText, "--conns", "40", "--messages", "400", "--procs", "2",
		"--senders", "4", "--rate", "2000", "--json")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ferry-load: %v", err)
	}
	if r := decode(t, out); r.Received != 400 || r.Conns != 40 || r.Procs != 2 || r.Errors != 0 {
		t.Fatalf("report %+v, want 40 connections over 2 processes and 400 messages", r)
	}
}

func TestBadUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--conns", "10"},
		{"--relay", "ferry://relay?v=1", "--conns", "1"},
		{"--relay", "not a link", "--conns", "4"},
		{"--relay", "x", "extra"},
	} {
		var out, errs bytes.Buffer
		if err := run(context.Background(), args, strings.NewReader(""), &out, &errs); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}
