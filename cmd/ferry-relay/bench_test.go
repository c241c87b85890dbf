package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/ferry-im/ferry/internal/load"
	"github.com/ferry-im/ferry/internal/servicetest"
)

// The benchmarks of docs/benchmarks.md, section "Relay: durable
// throughput": ferry-relay processes (the built binary) with a real store,
// and internal/load (ferry-load's engine) in the benchmark's process. Each
// b.N is one message; a run delivers b.N messages from 64 of 400 users
// (each user a connection of its own, from an address of its own,
// subscribed) to random others, each sender with up to 8 Sends in flight,
// or paced. They report delivered msgs/s, the delivery latency's p50, p99
// and p999, and the relays' CPU per message (from their metrics).
//
//	go test -run '^$' -bench 'Durable|Cluster' -benchtime=60000x ./cmd/ferry-relay

const (
	benchUsers   = 400
	benchSenders = 64
	benchWindow  = 8
)

// benchStore is a shared-PostgreSQL schema for a benchmark's relays, with
// 16 connections each.
func benchStore(b *testing.B) string {
	return servicetest.WithParam(servicetest.PostgresURL(b), "pool_max_conns", "16")
}

func BenchmarkDurable(b *testing.B) {
	for _, rate := range []float64{0, 2000, 5000} {
		name := "max"
		if rate > 0 {
			name = fmt.Sprintf("paced=%.0f", rate)
		}
		b.Run("store=sqlite/"+name, func(b *testing.B) {
			benchLoad(b, startCluster(b, 1, "", ""), rate)
		})
		b.Run("store=postgres/"+name, func(b *testing.B) {
			benchLoad(b, startCluster(b, 1, benchStore(b), ""), rate)
		})
	}
}

// BenchmarkCluster measures one, two and three relays of a cluster on
// PostgreSQL and NATS; users are spread evenly over the relays, so most
// messages cross from one relay to another.
func BenchmarkCluster(b *testing.B) {
	for _, n := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("relays=%d", n), func(b *testing.B) {
			benchLoad(b, startCluster(b, n, benchStore(b), servicetest.NATSURL(b)), 0)
		})
	}
}

// benchLoad sends b.N messages through c at rate (0: as fast as
// acknowledged) and reports what it measured.
func benchLoad(b *testing.B, c *testCluster, rate float64) {
	var seed [32]byte
	rand.Read(seed[:])
	var sources []netip.Addr
	for i := range benchUsers {
		sources = append(sources, netip.AddrFrom4([4]byte{127, 88, byte(i / 250), byte(i%250 + 1)}))
	}
	ctx := context.Background()
	var before load.Sample
	res, err := load.Run(ctx, load.Config{
		Plan:  load.Plan{Seed: seed, Users: benchUsers, Procs: 1, Senders: benchSenders, Messages: b.N},
		Relay: c.key.Public, Endpoints: c.eps, Sources: sources,
		Rate: rate, Window: benchWindow, Timeout: 20 * time.Minute,
		Ready: func() {
			var err error
			if before, err = load.ScrapeAll(ctx, c.metrics); err != nil {
				b.Error(err)
			}
			b.ResetTimer()
		},
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	after, err := load.ScrapeAll(ctx, c.metrics)
	if err != nil {
		b.Fatal(err)
	}
	if res.Received != b.N || res.StoredTwice != 0 {
		b.Fatalf("%d messages: %d received, %d stored twice", b.N, res.Received, res.StoredTwice)
	}
	ms := func(q float64) float64 { return float64(res.Latency.Quantile(q)) / 1e6 }
	b.ReportMetric(res.Throughput(), "msgs/s")
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(ms(0.999), "p999-ms")
	b.ReportMetric((after.CPU-before.CPU)/float64(b.N)*1e6, "relay-cpu-us/msg")
	b.ReportMetric(0, "ns/op")
}
