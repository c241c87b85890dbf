package load_test

import (
	"context"
	"crypto/rand"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/internal/load"
	"github.com/ferry-im/ferry/relay/relaytest"
)

func seed(t *testing.T) [32]byte {
	var s [32]byte
	rand.Read(s[:])
	return s
}

// TestRun checks that every message of a run is delivered once to the
// right user and counted, with one process.
func TestRun(t *testing.T) {
	r := relaytest.Start(t, nil)
	res, err := load.Run(context.Background(), load.Config{
		Plan:      load.Plan{Seed: seed(t), Users: 20, Procs: 1, Senders: 5, Messages: 500},
		Relay:     r.Link.Key,
		Endpoints: r.Link.Endpoints,
		Sources:   []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")},
		Window:    4,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Users != 20 || res.Sent != 500 || res.Expected != 500 || res.Received != 500 || res.StoredTwice != 0 || res.Refused != 0 {
		t.Fatalf("result %+v, want 20 users and 500 messages sent, expected and received once", res)
	}
	if res.Latency.N != 500 || res.Throughput() <= 0 {
		t.Fatalf("latency histogram of %d, throughput %v", res.Latency.N, res.Throughput())
	}
}

// TestRunProcesses checks that the processes of a plan share out the
// users and messages: run here as two Runs side by side.
func TestRunProcesses(t *testing.T) {
	r := relaytest.Start(t, nil)
	plan := load.Plan{Seed: seed(t), Users: 30, Procs: 2, Senders: 3, Messages: 300}
	start := make(chan struct{})
	var ready sync.WaitGroup
	ready.Add(2)
	results := make([]load.Result, 2)
	var wg sync.WaitGroup
	for p := range 2 {
		wg.Go(func() {
			res, err := load.Run(context.Background(), load.Config{
				Plan: plan, Proc: p, Relay: r.Link.Key, Endpoints: r.Link.Endpoints,
				Rate: 3000, Ready: ready.Done, Start: start, Quiet: 5 * time.Second,
			})
			if err != nil {
				t.Error(err)
			}
			results[p] = res
		})
	}
	ready.Wait()
	close(start)
	wg.Wait()
	var total load.Result
	for _, res := range results {
		total.Merge(res)
	}
	if total.Users != 30 || total.Sent != 300 || total.Expected != 300 || total.Received != 300 {
		t.Fatalf("merged result %+v, want 30 users, 300 messages", total)
	}
	if results[0].Expected == 0 || results[1].Expected == 0 {
		t.Fatalf("expected %d and %d: one process receives nothing", results[0].Expected, results[1].Expected)
	}
}
