package relay_test

import (
	"bufio"
	"bytes"
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
		KeyRate: -1, AddrRate: -1, HandshakeRate: -1, ConnsPerAddr: -1, MailboxCount: -1, MailboxBytes: -1,
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
	b.ReportAllocs()
	elapsed, lat := runLoad(b, r.addr, r.key.Public, load{n: b.N, senders: senders, window: window, rate: rate}, b.ResetTimer)
	if b.Failed() {
		return
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
}

// load describes the traffic runLoad generates.
type load struct {
	n       int     // messages in all
	senders int     // sender connections
	window  int     // Sends in flight per sender connection
	rate    float64 // messages per second in total, 0 = as fast as possible
}

// runLoad connects a receiver (token set, subscribed, acknowledging in
// batches of 256) and l.senders sender connections to the relay at addr,
// calls started, sends l.n 512-byte envelopes and waits until the receiver
// has every one. It returns the time from started to the last delivery and
// the sorted Send-to-Deliver latencies.
func runLoad(tb testing.TB, addr string, rk [32]byte, l load, started func()) (time.Duration, []time.Duration) {
	ctx := context.Background()
	recvKey := mustKey(tb)
	tok := token(1)
	mb := channel.MailboxID(recvKey.Public)
	recv := dialTCP(tb, addr, rk, recvKey)
	defer recv.Close()
	if _, ok := roundTrip(tb, recv, wire.SetToken{ReqID: 1, Token: tok}).(wire.OK); !ok {
		tb.Fatal("SetToken failed")
	}
	if _, ok := roundTrip(tb, recv, wire.Subscribe{ReqID: 2}).(wire.OK); !ok {
		tb.Fatal("Subscribe failed")
	}
	conns := make([]*channel.Conn, l.senders)
	for i := range conns {
		conns[i] = dialTCP(tb, addr, rk, mustKey(tb))
		defer conns[i].Close()
	}
	envelope := make([]byte, 512)

	// The receiver records latencies and acknowledges in batches.
	lat := make([]time.Duration, 0, l.n)
	recvDone := make(chan error, 1)
	go func() {
		seen := make(map[uint64]bool, l.n)
		var acks []uint64
		flush := func() error {
			if len(acks) == 0 {
				return nil
			}
			err := recv.Send(ctx, mustFrame(wire.Ack{Seqs: acks}))
			acks = acks[:0]
			return err
		}
		for len(seen) < l.n {
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
	if l.rate > 0 {
		interval = time.Duration(float64(l.senders) / l.rate * float64(time.Second))
	}
	started()
	start := time.Now()
	var wg sync.WaitGroup
	for w, ch := range conns {
		// A sender keeps up to window Sends in flight; its reader
		// collects the answers.
		slots := make(chan struct{}, l.window)
		wg.Go(func() {
			for {
				if _, ok := <-slots; !ok {
					return
				}
				f, err := ch.Recv(ctx)
				if err != nil {
					tb.Error(err)
					return
				}
				if f.Type != wire.TypeSendOK {
					m, _ := wire.Decode(f)
					tb.Errorf("got %+v, want SendOK", m)
					return
				}
			}
		})
		wg.Go(func() {
			defer close(slots)
			env := slices.Clone(envelope)
			tick := start.Add(time.Duration(w) * interval / time.Duration(l.senders))
			for {
				n := next.Add(1)
				if n > int64(l.n) {
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
					tb.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if tb.Failed() {
		return 0, nil
	}
	select {
	case err := <-recvDone:
		if err != nil {
			tb.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		tb.Fatal("the receiver did not get every message within 60s")
	}
	elapsed := time.Since(start)
	slices.Sort(lat)
	return elapsed, lat
}

// loadHelperEnv carries the relay address, key and load to the load helper.
const loadHelperEnv = "FERRY_RELAY_LOAD_HELPER"

// TestLoadHelper is not a test on its own: BenchmarkRelayCPU runs the test
// binary with loadHelperEnv set, and this generates the load from a
// separate process and prints "result ELAPSED P50 P99" in nanoseconds.
func TestLoadHelper(t *testing.T) {
	spec := os.Getenv(loadHelperEnv)
	if spec == "" {
		return
	}
	var addr, keyText string
	var l load
	if _, err := fmt.Sscan(spec, &addr, &keyText, &l.n, &l.senders, &l.window, &l.rate); err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(keyText)
	if err != nil || len(raw) != 32 {
		t.Fatalf("bad key %q", keyText)
	}
	elapsed, lat := runLoad(t, addr, [32]byte(raw), l, func() {})
	if t.Failed() {
		return
	}
	fmt.Printf("result %d %d %d\n", elapsed, lat[len(lat)/2], lat[len(lat)*99/100])
}

// BenchmarkRelayCPU runs the load of BenchmarkEndToEnd from a helper
// process, so the relay's own CPU time can be told apart from its
// clients': it reports relay-cpu-us/msg (user+system CPU of the relay
// process per message, from getrusage) and the ceiling that implies on
// 2 cores with the clients elsewhere, besides msgs/s and latency (which
// still share the machine with the clients). b.N is the number of
// messages.
func BenchmarkRelayCPU(b *testing.B) {
	for _, bc := range []struct {
		name            string
		senders, window int
	}{
		{"senders=64/window=1", 64, 1},
		{"senders=16/window=32", 16, 32},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := startBenchRelay(b)
			spec := fmt.Sprintf("%s %s %d %d %d 0", r.addr, base64.RawURLEncoding.EncodeToString(r.key.Public[:]), b.N, bc.senders, bc.window)
			cmd := exec.Command(os.Args[0], "-test.run=^TestLoadHelper$")
			cmd.Env = append(os.Environ(), loadHelperEnv+"="+spec)
			cmd.Stderr = os.Stderr
			var ru0, ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.ResetTimer()
			out, err := cmd.Output()
			b.StopTimer()
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			if err != nil {
				b.Fatalf("load helper: %v\n%s", err, out)
			}
			var elapsed, p50, p99 int64
			i := bytes.Index(out, []byte("result "))
			if i < 0 {
				b.Fatalf("load helper said %q", out)
			}
			if _, err := fmt.Sscan(string(out[i+len("result "):]), &elapsed, &p50, &p99); err != nil {
				b.Fatalf("load helper said %q: %v", out, err)
			}
			cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()) + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())
			perMsg := float64(cpu.Microseconds()) / float64(b.N)
			b.ReportMetric(float64(b.N)/time.Duration(elapsed).Seconds(), "msgs/s")
			b.ReportMetric(float64(p50)/1e6, "p50-ms")
			b.ReportMetric(float64(p99)/1e6, "p99-ms")
			b.ReportMetric(perMsg, "relay-cpu-us/msg")
			b.ReportMetric(2e6/perMsg, "relay-ceiling-msgs/s")
		})
	}
}

// connGauge reads the server's open-connections gauge.
func connGauge(tb testing.TB, srv *relay.Server) float64 {
	families, err := srv.Registry().Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "ferry_relay_connections" {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	tb.Fatal("no ferry_relay_connections gauge")
	return 0
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
			ch, err := openIdle(addr, [32]byte(raw))
			if err != nil {
				t.Errorf("connection %d: %v", i, err)
				return
			}
			conns[i] = ch
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	fmt.Println("ready")
	// Hold the connections until the parent closes stdin.
	bufio.NewReader(os.Stdin).ReadString('\n')
	os.Exit(0)
}

// openIdle opens one authenticated, registered, subscribed connection. It
// reports errors rather than failing, for use off the test goroutine.
func openIdle(addr string, rk [32]byte) (*channel.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	key, err := channel.GenerateKeyPair(nil)
	if err != nil {
		return nil, err
	}
	nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	ch, err := channel.Client(ctx, nc, key, rk)
	if err != nil {
		return nil, err
	}
	for _, m := range []wire.Message{wire.SetToken{ReqID: 1, Token: token(1)}, wire.Subscribe{ReqID: 2}} {
		if err := ch.Send(ctx, mustFrame(m)); err != nil {
			return nil, err
		}
		f, err := ch.Recv(ctx)
		if err != nil {
			return nil, err
		}
		if f.Type != wire.TypeOK {
			return nil, fmt.Errorf("%v answered with %v", m.Type(), f.Type)
		}
	}
	return ch, nil
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
	if got := connGauge(b, r.srv); got != n+1 {
		b.Fatalf("the relay serves %v connections, want %d", got, n+1)
	}
	heap1, stack1 := measure()
	heap, stack := float64(heap1)-float64(heap0), float64(stack1)-float64(stack0)
	b.ReportMetric((heap+stack)/n, "bytes/conn")
	b.ReportMetric(heap/n, "heap-bytes/conn")
	b.ReportMetric(stack/n, "stack-bytes/conn")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
}
