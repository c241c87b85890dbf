package sqlite_test

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
)

// BenchmarkPut measures durable Puts per second with many concurrent
// writers, which is what group commit is for.
func BenchmarkPut(b *testing.B) {
	s := openAt(b, filepath.Join(b.TempDir(), "relay.db"))
	defer s.Close()
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
