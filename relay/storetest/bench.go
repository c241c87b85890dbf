package storetest

import (
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
)

// BenchPut measures durable Puts of 1 KiB envelopes into one mailbox per
// second from 128 concurrent writers (64 per P on 2 Ps), which is what a
// store's group commit is for. Backends call it from their BenchmarkPut.
func BenchPut(b *testing.B, s relay.Store) {
	ctx := context.Background()
	mb := [16]byte{'b'}
	if err := s.SetToken(ctx, mb, [32]byte{1}); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 1024)
	var n atomic.Uint64
	b.SetParallelism(64)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			var id [16]byte
			binary.BigEndian.PutUint64(id[:], n.Add(1))
			if _, _, err := s.Put(ctx, mb, relay.Envelope{ID: id, Received: time.Now(), Data: data}, relay.Quota{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
}
