package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/load"
	"github.com/ferry-im/ferry/internal/servicetest"
	"github.com/ferry-im/ferry/link"
)

// testCluster is several ferry-relay processes sharing a PostgreSQL
// store and a NATS bus, as docs/operations.md runs a cluster.
type testCluster struct {
	t       testing.TB
	bin     string
	key     channel.KeyPair
	store   string
	nats    string
	nodes   []*relayProc
	dirs    []string        // each node's data directory
	eps     []link.Endpoint // each node's own endpoint, by node
	metrics []string        // each node's metrics URL
}

// startCluster starts n relays on store (a postgres:// URL, or "" for
// SQLite in each node's directory: then n is 1) and nats (or "" for
// none).
func startCluster(t testing.TB, n int, store, nats string) *testCluster {
	t.Helper()
	c := &testCluster{t: t, bin: buildRelay(t), key: mustKeyPair(t), store: store, nats: nats}
	for i := range n {
		c.start(i)
	}
	return c
}

// start starts node i, with the cluster's key in a data directory of its
// own.
func (c *testCluster) start(i int) {
	c.t.Helper()
	dir := filepath.Join(c.t.TempDir(), fmt.Sprintf("node%d", i))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	keyText := base64.RawURLEncoding.EncodeToString(c.key.Private[:]) + "\n"
	if err := os.WriteFile(filepath.Join(dir, keyFile), []byte(keyText), 0o600); err != nil {
		c.t.Fatal(err)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", servicetest.FreePort(c.t))
	args := []string{"--data", dir, "--listen", "tcp=127.0.0.1:0", "--metrics", metrics, "--log-level", "warn"}
	if c.store != "" {
		args = append(args, "--store", c.store, "--node", fmt.Sprintf("node%d", i))
	} else {
		// The key written above makes the directory one that "ran a relay
		// before"; its SQLite database is new on purpose.
		args = append(args, "--new-database")
	}
	if c.nats != "" {
		args = append(args, "--cluster", c.nats)
	}
	p := startRelay(c.t, c.bin, args...)
	c.metrics = append(c.metrics, "http://"+metrics+"/metrics")
	if p.link.Key != c.key.Public || len(p.link.Endpoints) != i+1 {
		c.t.Fatalf("node %d's link %s: want the cluster's key and %d endpoints", i, p.link, i+1)
	}
	c.nodes = append(c.nodes, p)
	c.dirs = append(c.dirs, dir)
	c.eps = append(c.eps, p.link.Endpoints[0])
}

// kill9 kills node i with SIGKILL.
func (c *testCluster) kill9(i int) {
	c.t.Helper()
	if err := c.nodes[i].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
}

// clusterStore is a schema of the shared PostgreSQL for one cluster, with
// few connections per relay (the server allows 100 in all).
func clusterStore(t testing.TB) string {
	return servicetest.WithParam(servicetest.PostgresURL(t), "pool_max_conns", "4")
}

// loadCluster runs a load of messages at rate over c's endpoints: users
// from addresses of their own, on every node; it returns the result.
func loadCluster(t *testing.T, c *testCluster, users, messages int, rate float64, during func()) load.Result {
	t.Helper()
	var seed [32]byte
	copy(seed[:], t.Name())
	var sources []netip.Addr
	for i := range users {
		sources = append(sources, netip.AddrFrom4([4]byte{127, 66, byte(i / 250), byte(i%250 + 1)}))
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	res, err := load.Run(ctx, load.Config{
		Plan:  load.Plan{Seed: seed, Users: users, Procs: 1, Senders: users / 3, Messages: messages},
		Relay: c.key.Public, Endpoints: c.eps, Sources: sources,
		Rate: rate, Window: 4, Timeout: 90 * time.Second, Quiet: 20 * time.Second,
		Ready: func() {
			if during != nil {
				wg.Go(during)
			}
		},
	})
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d messages: %d received, %d pushed again, %d reconnects, %d errors; %.0f msgs/s, p50 %v p99 %v",
		messages, res.Received, res.Duplicates, res.Reconnects, res.Errors, res.Throughput(),
		res.Latency.Quantile(0.5), res.Latency.Quantile(0.99))
	return res
}

// complete fails unless every message was acknowledged, delivered and
// stored once.
func complete(t *testing.T, res load.Result, messages int) {
	t.Helper()
	if res.Sent != messages || res.Expected != messages || res.Received != messages {
		t.Fatalf("%d messages: %d acknowledged, %d received: some were lost", messages, res.Sent, res.Received)
	}
	if res.StoredTwice != 0 || res.Refused != 0 {
		t.Fatalf("%d messages stored twice, %d refused; want none", res.StoredTwice, res.Refused)
	}
}

// TestClusterLink checks that every node of a cluster links the endpoints
// of all, that "ferry-relay link" with the store prints them, and that a
// relay with another key is refused.
func TestClusterLink(t *testing.T) {
	c := startCluster(t, 2, clusterStore(t), servicetest.NATSURL(t))
	out, err := exec.Command(c.bin, "link", "--data", c.dirs[1], "--store", c.store).Output()
	if err != nil {
		t.Fatalf("ferry-relay link: %v", err)
	}
	r, err := link.ParseRelay(strings.TrimSpace(string(out)))
	want := []link.Endpoint{c.eps[1], c.eps[0]}
	if err != nil || r.Key != c.key.Public || !slices.EqualFunc(r.Endpoints, want, link.Endpoint.Equal) {
		t.Fatalf("ferry-relay link printed %q (%v), want the cluster's key and node1's endpoint, then node0's", out, err)
	}
	cmd := exec.Command(c.bin, "--data", t.TempDir(), "--listen", "tcp=127.0.0.1:0", "--store", c.store)
	msg, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "copy relay.key") {
		t.Fatalf("a relay with another key joined the cluster: %v\n%s", err, msg)
	}
}

// TestClusterConfigFile checks that --config sets flags, and that the
// command line wins over it.
func TestClusterConfigFile(t *testing.T) {
	bin := buildRelay(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "relay.conf")
	text := "# a cluster node\ndata = " + filepath.Join(dir, "data") + "\nlisten = tcp=127.0.0.1:1\nlog-level = warn\n"
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startRelay(t, bin, "--config", cfg, "--listen", "tcp=127.0.0.1:0")
	if _, err := os.Stat(filepath.Join(dir, "data", keyFile)); err != nil {
		t.Fatalf("the config's data directory was not used: %v", err)
	}
	if p.link.Endpoints[0].Addr == "127.0.0.1:1" {
		t.Fatal("the config's --listen won over the command line's")
	}
	if err := os.WriteFile(cfg, []byte("lissen = tcp=127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "--config", cfg).CombinedOutput(); err == nil || !strings.Contains(string(out), `unknown flag "lissen"`) {
		t.Fatalf("a config with a misspelt flag: %v\n%s", err, out)
	}
}

// TestClusterKill9 kills one relay of three with SIGKILL while 10,000
// messages flow: nothing acknowledged is lost, nothing is stored twice,
// and the users whose relay died carry on through the others.
func TestClusterKill9(t *testing.T) {
	c := startCluster(t, 3, clusterStore(t), servicetest.NATSURL(t))
	res := loadCluster(t, c, 60, 10000, 2500, func() {
		time.Sleep(1500 * time.Millisecond)
		c.kill9(0)
	})
	complete(t, res, 10000)
	if res.Reconnects == 0 {
		t.Fatal("no user reconnected: the kill hit nobody")
	}
}

// TestClusterPostgresRestart crashes the cluster's PostgreSQL mid-run and
// starts it again: the relays recover by themselves and every message
// arrives once.
func TestClusterPostgresRestart(t *testing.T) {
	pg := servicetest.StartPostgres(t)
	c := startCluster(t, 3, servicetest.WithParam(pg.URL, "pool_max_conns", "4"), servicetest.NATSURL(t))
	res := loadCluster(t, c, 30, 5000, 1000, func() {
		time.Sleep(1500 * time.Millisecond)
		pg.Crash()
		time.Sleep(time.Second)
		pg.Start()
	})
	complete(t, res, 5000)
}

// TestClusterNATSDown stops the cluster's NATS mid-run: delivery falls
// back to polling the store, slower, and every message still arrives.
func TestClusterNATSDown(t *testing.T) {
	nats := servicetest.StartNATS(t)
	c := startCluster(t, 3, clusterStore(t), nats.URL)
	res := loadCluster(t, c, 30, 4000, 1000, func() {
		time.Sleep(time.Second)
		nats.Stop()
	})
	complete(t, res, 4000)
}

// TestClusterSlowloris opens 10,000 connections that never finish their
// handshake, spread over the nodes and many source addresses, then checks
// that honest users still connect and deliver on every node.
func TestClusterSlowloris(t *testing.T) {
	const n = 10000
	raiseTestFileLimit(t, n+1000)
	c := startCluster(t, 3, clusterStore(t), servicetest.NATSURL(t))
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	for i := range n {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 77, byte(i/200), byte(i%200+1))}}
		nc, err := d.Dial("tcp", c.eps[i%len(c.eps)].Addr)
		if err != nil {
			t.Fatalf("half-open connection %d: %v", i, err)
		}
		nc.Write([]byte{0}) // the first byte of a handshake's length
		conns = append(conns, nc)
	}
	res := loadCluster(t, c, 30, 2000, 500, nil)
	complete(t, res, 2000)
	if p99 := res.Latency.Quantile(0.99); p99 > 2*time.Second {
		t.Fatalf("p99 delivery latency %v with %d half-open connections, want under 2s", p99, n)
	}
	if res.ConnectTime > 10*time.Second {
		t.Fatalf("honest users took %v to connect", res.ConnectTime)
	}
}

// raiseTestFileLimit lifts the soft open-file limit to want (at most the
// hard limit) and fails if that is not enough.
func raiseTestFileLimit(t *testing.T, want uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < want {
		lim.Cur = min(lim.Max, want)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	if lim.Cur < want {
		t.Fatalf("open-file limit %d, the test needs %d", lim.Cur, want)
	}
}
