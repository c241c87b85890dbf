package ferry

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/blobfs"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/transport/fallback/fallbacktest"
)

// benchUploadSize is the upload of the media benchmarks: 1 GiB, or
// FERRY_BENCH_UPLOAD_MB.
func benchUploadSize() int64 {
	if mb, err := strconv.Atoi(os.Getenv("FERRY_BENCH_UPLOAD_MB")); err == nil && mb > 0 {
		return int64(mb) << 20
	}
	return 1 << 30
}

// BenchmarkTextDuringUpload measures text delivery latency (bob's Send
// call to alice's client having stored the text) through a relay on
// loopback with its SQLite store and blob store on disk, first alone
// (baseline), then while bob uploads a large attachment to alice
// (benchUploadSize) from the same client: the texts go on the same
// anonymous connection as the upload's pieces. It reports p50 and p99 of
// both and the differences; the target is a p99 within 100 ms of
// the baseline's. One iteration is one text of each phase.
func BenchmarkTextDuringUpload(b *testing.B) {
	ctx := context.Background()
	alice, bob := benchPairBlobs(b)
	to := conversationOf(b, bob, "alice")
	arrived := make(chan time.Time, 16)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go alice.Sync(sctx, SyncOptions{Wait: time.Hour, OnMessages: func(ms []*Message) {
		for _, m := range ms {
			if m.Kind == KindText {
				arrived <- time.Now()
			}
		}
	}})
	ping := func(i int) time.Duration {
		start := time.Now()
		if _, err := bob.Send(ctx, to, fmt.Sprint("ping ", i)); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-arrived:
			return at.Sub(start)
		case <-time.After(time.Minute):
			b.Fatal("text did not arrive")
		}
		return 0
	}
	ping(-1) // warm up the connections
	big := bigFile(b, benchUploadSize())
	b.ResetTimer()
	var base, during []time.Duration
	for i := range b.N {
		base = append(base, ping(i))
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	up := make(chan error, 1)
	var upStart time.Time
	var progress int64
	go func() {
		upStart = time.Now()
		_, err := bob.SendFile(ctx, to, big, SendFileOptions{Progress: func(p Progress) { progress = p.Done }})
		up <- err
	}()
	for progress == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	b.StartTimer()
	for i := range b.N {
		during = append(during, ping(i))
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	if err := <-up; err != nil {
		b.Fatal(err)
	}
	secs := time.Since(upStart).Seconds()
	p := func(d []time.Duration, q int) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[min(len(s)-1, len(s)*q/100)].Microseconds()) / 1000
	}
	b.ReportMetric(p(base, 50), "base-p50-ms")
	b.ReportMetric(p(base, 99), "base-p99-ms")
	b.ReportMetric(p(during, 50), "upload-p50-ms")
	b.ReportMetric(p(during, 99), "upload-p99-ms")
	b.ReportMetric(p(during, 99)-p(base, 99), "p99-added-ms")
	b.ReportMetric(float64(benchUploadSize())/secs/1e6, "upload-MB/s")
}

// benchPairBlobs is benchPair with a blob store on disk.
func benchPairBlobs(b *testing.B) (alice, bob *Client) {
	blobs, err := blobfs.Open(filepath.Join(b.TempDir(), "blobs"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { blobs.Close() })
	return benchPairWith(b, func(c *relay.Config) { c.Blobs = blobs })
}

// bigFile writes a random file of n bytes.
func bigFile(b *testing.B, n int64) string {
	p := filepath.Join(b.TempDir(), "big.bin")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	rand.Read(buf)
	for left := n; left > 0; left -= int64(len(buf)) {
		buf[0]++ // not the same 4 MiB over and over
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			b.Fatal(err)
		}
	}
	return p
}

// BenchmarkUploadTransports uploads a blob (benchUploadSize; one
// iteration is one upload) to a relay with its blob store on disk, over
// tcp and over obfs, in one run, and reports MB/s of each.
func BenchmarkUploadTransports(b *testing.B) {
	size := benchUploadSize()
	blobs, err := blobfs.Open(filepath.Join(b.TempDir(), "blobs"))
	if err != nil {
		b.Fatal(err)
	}
	defer blobs.Close()
	key, _ := channel.GenerateKeyPair(nil)
	srv, err := relay.NewServer(relay.Config{Key: key, Store: memstore.New(), Blobs: blobs,
		Limits: relay.Limits{BlobMaxSize: -1, BlobQuotaBytes: -1, BlobQuotaCount: -1}})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	obfsSrv := fallbacktest.ObfsServer(b, 0)
	serve := func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go srv.ServeConn(context.Background(), c)
		}
	}
	tcpL, _ := net.Listen("tcp", "127.0.0.1:0")
	rawObfs, _ := net.Listen("tcp", "127.0.0.1:0")
	obfsL := obfsSrv.Listener(rawObfs)
	defer tcpL.Close()
	defer obfsL.Close()
	go serve(tcpL)
	go serve(obfsL)
	r := link.Relay{Key: key.Public, Endpoints: []link.Endpoint{
		{Transport: "tcp", Addr: tcpL.Addr().String()}, obfsSrv.Endpoint(rawObfs.Addr().String())}}
	src := bigFile(b, size)
	f, _ := os.Open(src)
	defer f.Close()
	for _, name := range []string{"tcp", "obfs"} {
		b.Run(name, func(b *testing.B) {
			d := &relayclient.Dialer{Transports: DefaultTransports(nil), Order: []string{name}}
			owner, _ := channel.GenerateKeyPair(nil)
			cn, err := d.Dial(context.Background(), r, owner)
			if err != nil {
				b.Fatal(err)
			}
			defer cn.Close()
			var tok [32]byte
			rand.Read(tok[:])
			if err := cn.SetToken(context.Background(), tok); err != nil {
				b.Fatal(err)
			}
			mb := channel.MailboxID(owner.Public)
			b.SetBytes(size)
			b.ResetTimer()
			for range b.N {
				var k [32]byte
				rand.Read(k[:])
				st, err := cn.BlobCreate(context.Background(), k, mb, tok, size, false)
				if err == nil {
					_, err = cn.Upload(context.Background(), k, f, size, st, nil)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
