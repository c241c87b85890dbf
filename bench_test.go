package ferry_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ferry-im/ferry"
)

// BenchmarkSendReceive measures the client end to end through a relay on
// loopback with its durable SQLite store: bob encrypts, stores and sends
// b.N messages (SendMany, 100 per call, each returning after the relay's
// durable SendOK); alice receives, decrypts, de-duplicates, stores and
// acknowledges them, and queues delivery receipts. msgs/s counts messages
// through both clients.
func BenchmarkSendReceive(b *testing.B) {
	ctx := context.Background()
	alice, bob := relayPair(b, filepath.Join(b.TempDir(), "relay.db"), nil)
	texts := make([]string, 100)
	for i := range texts {
		texts[i] = fmt.Sprintf("benchmark message %03d with some text in it", i)
	}
	// alice stays connected and counts what she stores.
	sctx, cancel := context.WithCancel(ctx)
	all := make(chan struct{})
	received := 0
	syncDone := make(chan error, 1)
	go func() {
		syncDone <- alice.Sync(sctx, ferry.SyncOptions{Wait: time.Hour, OnMessages: func(ms []*ferry.Message) {
			received += len(ms)
			if received == b.N {
				close(all)
			}
		}})
	}()
	b.ResetTimer()
	for sent := 0; sent < b.N; sent += len(texts) {
		if _, err := bob.SendMany(ctx, "alice", texts[:min(len(texts), b.N-sent)]); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Fatalf("alice received %d of %d", received, b.N)
	}
	b.StopTimer()
	cancel()
	<-syncDone
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkDeliveryLatency measures one message at a time from bob's Send
// call to alice's client having stored it (OnMessages), through a local
// relay with its SQLite store: encrypt, store, send, relay fsync, push,
// decrypt, store, in p50 and p99.
func BenchmarkDeliveryLatency(b *testing.B) {
	ctx := context.Background()
	alice, bob := relayPair(b, filepath.Join(b.TempDir(), "relay.db"), nil)
	arrived := make(chan time.Time, 16)
	sctx, cancel := context.WithCancel(ctx)
	syncDone := make(chan error, 1)
	go func() {
		syncDone <- alice.Sync(sctx, ferry.SyncOptions{Wait: time.Hour, OnMessages: func(ms []*ferry.Message) {
			for range ms {
				arrived <- time.Now()
			}
		}})
	}()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if _, err := bob.Send(ctx, "alice", fmt.Sprint("ping ", i)); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-arrived:
			lat = append(lat, at.Sub(start))
		case <-time.After(time.Minute):
			b.Fatal("message did not arrive")
		}
	}
	b.StopTimer()
	cancel()
	<-syncDone
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)*90/100].Microseconds())/1000, "p90-ms")
}
