package relay_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/sqlite"
	"github.com/ferry-im/ferry/wire"
)

// benchRelay is a relay on loopback TCP with the SQLite store and no rate
// limits or quotas (every connection comes from 127.0.0.1).
type benchRelay struct {
	srv  *relay.Server
	key  channel.KeyPair
	addr string
}

func startBenchRelay(tb testing.TB) *benchRelay {
	tb.Helper()
	store, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "relay.db"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	key := mustKey(tb)
	srv, err := relay.NewServer(relay.Config{Key: key, Store: store, Limits: relay.Limits{
		KeyRate: -1, AddrRate: -1, HandshakeRate: -1, MailboxCount: -1, MailboxBytes: -1,
	}})
	if err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		var conns sync.WaitGroup
		defer conns.Wait()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Go(func() { srv.ServeConn(context.Background(), c) })
		}
	})
	tb.Cleanup(func() {
		l.Close()
		srv.Close()
		wg.Wait()
		store.Close()
	})
	return &benchRelay{srv: srv, key: key, addr: l.Addr().String()}
}

// dialTCP connects to a relay at addr with relay key rk as key.
func dialTCP(tb testing.TB, addr string, rk [32]byte, key channel.KeyPair) *channel.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	ch, err := channel.Client(ctx, nc, key, rk)
	if err != nil {
		tb.Fatal(err)
	}
	return ch
}

// roundTrip sends m and returns the next frame (no push is expected).
func roundTrip(tb testing.TB, ch *channel.Conn, m wire.Message) wire.Message {
	tb.Helper()
	ctx := context.Background()
	if err := ch.Send(ctx, mustFrame(m)); err != nil {
		tb.Fatal(err)
	}
	f, err := ch.Recv(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	got, err := wire.Decode(f)
	if err != nil {
		tb.Fatal(err)
	}
	return got
}

// BenchmarkEndToEnd measures messages per second through one relay on
// loopback TCP with the durable SQLite store: senders connections each
// send envelopes one after another (the next once SendOK says the last is
// durable); one subscribed receiver acknowledges in batches. Each b.N is
// one message. It reports msgs/s and the p50/p99 latency from Send to
// Deliver. The paced variants send at a fixed total rate to show latency
// below saturation.
func BenchmarkEndToEnd(b *testing.B) {
	for _, bc := range []struct {
		name    string
		senders int
		window  int     // Sends in flight per sender connection
		rate    float64 // messages per second in total, 0 = as fast as possible
	}{
		{"senders=64/window=1", 64, 1, 0},
		{"senders=256/window=1", 256, 1, 0},
		{"senders=16/window=32", 16, 32, 0},
		{"senders=64/window=1/paced=5000", 64, 1, 5000},
	} {
		b.Run(bc.name, func(b *testing.B) { benchEndToEnd(b, bc.senders, bc.window, bc.rate) })
	}
}

func benchEndToEnd(b *testing.B, senders, window int, rate float64) {
	r := startBenchRelay(b)
	ctx := context.Background()
	recvKey := mustKey(b)
	tok := token(1)
	mb := channel.MailboxID(recvKey.Public)
	recv := dialTCP(b, r.addr, r.key.Public, recvKey)
	defer recv.Close()
	if _, ok := roundTrip(b, recv, wire.SetToken{ReqID: 1, Token: tok}).(wire.OK); !ok {
		b.Fatal("SetToken failed")
	}
	if _, ok := roundTrip(b, recv, wire.Subscribe{ReqID: 2}).(wire.OK); !ok {
		b.Fatal("Subscribe failed")
	}
	conns := make([]*channel.Conn, senders)
	for i := range conns {
		conns[i] = dialTCP(b, r.addr, r.key.Public, mustKey(b))
		defer conns[i].Close()
	}
	envelope := make([]byte, 512)

	// The receiver records latencies and acknowledges in batches.
	lat := make([]time.Duration, 0, b.N)
	recvDone := make(chan error, 1)
	go func() {
		seen := make(map[uint64]bool, b.N)
		var acks []uint64
		flush := func() error {
			if len(acks) == 0 {
				return nil
			}
			err := recv.Send(ctx, mustFrame(wire.Ack{Seqs: acks}))
			acks = acks[:0]
			return err
		}
		for len(seen) < b.N {
			f, err := recv.Recv(ctx)
			if err != nil {
				recvDone <- err
				return
			}
			m, err := wire.Decode(f)
			if err != nil {
				recvDone <- err
				return
			}
			d, ok := m.(wire.Deliver)
			if !ok {
				continue
			}
			n := binary.BigEndian.Uint64(d.ID[:8])
			if seen[n] {
				continue
			}
			seen[n] = true
			sent := int64(binary.BigEndian.Uint64(d.Envelope[:8]))
			lat = append(lat, time.Duration(time.Now().UnixNano()-sent))
			acks = append(acks, d.Seq)
			if len(acks) == 256 {
				if err := flush(); err != nil {
					recvDone <- err
					return
				}
			}
		}
		recvDone <- flush()
	}()

	var next atomic.Int64
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(senders) / rate * float64(time.Second))
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w, ch := range conns {
		// A sender keeps up to window Sends in flight; its reader
		// collects the answers.
		slots := make(chan struct{}, window)
		wg.Go(func() {
			for {
				if _, ok := <-slots; !ok {
					return
				}
				f, err := ch.Recv(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				if f.Type != wire.TypeSendOK {
					m, _ := wire.Decode(f)
					b.Errorf("got %+v, want SendOK", m)
					return
				}
			}
		})
		wg.Go(func() {
			defer close(slots)
			env := slices.Clone(envelope)
			tick := start.Add(time.Duration(w) * interval / time.Duration(senders))
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				if interval > 0 {
					time.Sleep(time.Until(tick))
					tick = tick.Add(interval)
				}
				slots <- struct{}{}
				var id [16]byte
				binary.BigEndian.PutUint64(id[:8], uint64(n))
				binary.BigEndian.PutUint64(env[:8], uint64(time.Now().UnixNano()))
				if err := ch.Send(ctx, mustFrame(wire.Send{ID: id, To: mb, Token: tok, Envelope: env})); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	select {
	case err := <-recvDone:
		if err != nil {
			b.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		b.Fatal("the receiver did not get every message within 60s")
	}
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
}

// idleHelperEnv carries the relay address to the idle-client helper.
const idleHelperEnv = "FERRY_RELAY_IDLE_HELPER"

// raiseFileLimit lifts the soft open-file limit to the hard one.
func raiseFileLimit(tb testing.TB, want uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur >= want {
		return
	}
	lim.Cur = min(lim.Max, want)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur < want {
		tb.Fatalf("open-file limit is %d, the benchmark needs %d", lim.Cur, want)
	}
}

// TestIdleClientsHelper is not a test on its own: BenchmarkIdleConnMemory
// runs the test binary with idleHelperEnv set, and this opens that many
// authenticated, subscribed connections in a separate process, so their
// client-side memory is not counted against the relay.
func TestIdleClientsHelper(t *testing.T) {
	spec := os.Getenv(idleHelperEnv)
	if spec == "" {
		return
	}
	var addr, keyText string
	var n int
	if _, err := fmt.Sscan(spec, &addr, &keyText, &n); err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(keyText)
	if err != nil || len(raw) != 32 {
		t.Fatalf("bad key %q", keyText)
	}
	raiseFileLimit(t, uint64(n)+100)
	conns := make([]*channel.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ch := dialTCP(t, addr, [32]byte(raw), mustKey(t))
			roundTrip(t, ch, wire.SetToken{ReqID: 1, Token: token(1)})
			roundTrip(t, ch, wire.Subscribe{ReqID: 2})
			conns[i] = ch
		})
	}
	wg.Wait()
	fmt.Println("ready")
	// Hold the connections until the parent closes stdin.
	bufio.NewReader(os.Stdin).ReadString('\n')
	os.Exit(0)
}

// BenchmarkIdleConnMemory measures the relay's memory per idle
// connection: authenticated, mailbox registered and subscribed, with 10,000
// of them open (opened by a helper process). It reports heap+stack bytes
// per connection (runtime.MemStats HeapInuse+StackInuse, after GC). Run it
// with -benchtime=1x: every b.N does the same single measurement.
func BenchmarkIdleConnMemory(b *testing.B) {
	const n = 10000
	raiseFileLimit(b, n+200)
	r := startBenchRelay(b)
	measure := func() (heap, stack uint64) {
		// Each GC may halve a goroutine stack that uses under a quarter of
		// it; a relay that has run a while has done many GCs.
		for range 5 {
			runtime.GC()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse, ms.StackInuse
	}
	// Warm up: one connection, so one-time costs (pools, the first
	// statement preparations) are not counted per connection.
	warm := dialTCP(b, r.addr, r.key.Public, mustKey(b))
	roundTrip(b, warm, wire.SetToken{ReqID: 1, Token: token(1)})
	roundTrip(b, warm, wire.Subscribe{ReqID: 2})
	defer warm.Close()

	heap0, stack0 := measure()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleClientsHelper$")
	cmd.Env = append(os.Environ(), idleHelperEnv+"="+r.addr+" "+base64.RawURLEncoding.EncodeToString(r.key.Public[:])+" "+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		b.Fatalf("helper said %q (%v)", line, err)
	}
	// Let the relay's goroutines settle (stacks shrink at GC).
	time.Sleep(200 * time.Millisecond)
	heap1, stack1 := measure()
	heap, stack := float64(heap1)-float64(heap0), float64(stack1)-float64(stack0)
	b.ReportMetric((heap+stack)/n, "bytes/conn")
	b.ReportMetric(heap/n, "heap-bytes/conn")
	b.ReportMetric(stack/n, "stack-bytes/conn")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
}
