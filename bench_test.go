package ferry

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/relaytest"
	"github.com/ferry-im/ferry/relay/sqlite"
)

// benchPair starts a relay on loopback TCP with its durable SQLite store
// and the relay's default limits (as ferry-relay runs it), and two
// clients on it, alice and bob, who have exchanged an invite.
func benchPair(b *testing.B) (alice, bob *Client) { return benchPairWith(b, nil) }

// benchPairWith is benchPair with edit applied to the relay's Config.
func benchPairWith(b *testing.B, edit func(*relay.Config)) (alice, bob *Client) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "relay.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg := &relay.Config{Store: st, Limits: relay.Limits{
		AddrRate: 2000, AddrBurst: 10000, HandshakeRate: 200, HandshakeBurst: 1000, // the defaults
	}}
	if edit != nil {
		edit(cfg)
	}
	r := relaytest.Start(b, cfg)
	dir := b.TempDir()
	mk := func(name string) *Client {
		c, err := Init(ctx, Config{Home: filepath.Join(dir, name)}, r.Link.String(), name)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}
	alice, bob = mk("alice"), mk("bob")
	inv, err := alice.Invite(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bob.Accept(ctx, inv); err != nil {
		b.Fatal(err)
	}
	if err := alice.Sync(ctx, SyncOptions{}); err != nil {
		b.Fatal(err)
	}
	return alice, bob
}

// BenchmarkSendReceive measures the client end to end through a relay on
// loopback with its durable SQLite store: bob encrypts, stores and sends
// b.N messages (SendMany, 100 per call, each returning after the relay's
// durable SendOK); alice receives, decrypts, de-duplicates, stores and
// acknowledges them, and queues delivery receipts. msgs/s counts messages
// through both clients.
func BenchmarkSendReceive(b *testing.B) {
	ctx := context.Background()
	alice, bob := benchPair(b)
	texts := make([]string, 100)
	for i := range texts {
		texts[i] = fmt.Sprintf("benchmark message %03d with some text in it", i)
	}
	to := conversationOf(b, bob, "alice")
	// alice stays connected and counts what she stores.
	sctx, cancel := context.WithCancel(ctx)
	all := make(chan struct{})
	received := 0
	syncDone := make(chan error, 1)
	go func() {
		syncDone <- alice.Sync(sctx, SyncOptions{Wait: time.Hour, OnMessages: func(ms []*Message) {
			for _, m := range ms {
				if m.Kind == KindText {
					received++
				}
			}
			if received == b.N {
				close(all)
			}
		}})
	}()
	b.ResetTimer()
	for sent := 0; sent < b.N; sent += len(texts) {
		if _, err := bob.SendMany(ctx, to, texts[:min(len(texts), b.N-sent)]); err != nil {
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
	alice, bob := benchPair(b)
	to := conversationOf(b, bob, "alice")
	arrived := make(chan time.Time, 16)
	sctx, cancel := context.WithCancel(ctx)
	syncDone := make(chan error, 1)
	go func() {
		syncDone <- alice.Sync(sctx, SyncOptions{Wait: time.Hour, OnMessages: func(ms []*Message) {
			for _, m := range ms {
				if m.Kind == KindText {
					arrived <- time.Now()
				}
			}
		}})
	}()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if _, err := bob.Send(ctx, to, fmt.Sprint("ping ", i)); err != nil {
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

func conversationOf(tb testing.TB, c *Client, name string) ConversationID {
	cv, err := c.FindConversation(context.Background(), name)
	if err != nil {
		tb.Fatal(err)
	}
	return cv.ID
}
