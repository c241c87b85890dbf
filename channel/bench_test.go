package channel

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-im/ferry/wire"
)

// tcpPair returns an established channel over loopback TCP.
func tcpPair(b testing.TB) (cli, srv *Conn) {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	s, ok := <-accepted
	if !ok {
		b.Fatal("accept failed")
	}
	cli, srv, _, _ = pairOver(b, a, s)
	return cli, srv
}

// BenchmarkThroughput sends 1 MiB frames one way over loopback TCP.
func BenchmarkThroughput(b *testing.B) {
	cli, srv := tcpPair(b)
	ctx := context.Background()
	payload := bytes.Repeat([]byte{0xab}, wire.MaxPayload)
	b.SetBytes(int64(len(payload)))
	done := make(chan error, 1)
	n := b.N
	go func() {
		for range n {
			if _, err := srv.Recv(ctx); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	cpu0 := cpuTime()
	b.ResetTimer()
	for range n {
		if err := cli.Send(ctx, wire.Frame{Type: 1, Payload: payload}); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	// CPU seconds (both ends, user+system) per GiB: robust on a busy machine.
	b.ReportMetric((cpuTime()-cpu0).Seconds()/(float64(n)*float64(len(payload))/(1<<30)), "CPU-s/GiB")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRoundTrip measures a small request and its answer over loopback
// TCP (one op = one round trip).
func BenchmarkRoundTrip(b *testing.B) {
	cli, srv := tcpPair(b)
	ctx := context.Background()
	go func() {
		for {
			f, err := srv.Recv(ctx)
			if err != nil {
				return
			}
			if err := srv.Send(ctx, f); err != nil {
				return
			}
		}
	}()
	ping, _ := wire.NewFrame(wire.Ping{Nonce: 1})
	b.ResetTimer()
	for b.Loop() {
		if err := cli.Send(ctx, ping); err != nil {
			b.Fatal(err)
		}
		if _, err := cli.Recv(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandshake measures complete handshakes (client and relay side,
// both in this process) over an in-memory pipe.
func BenchmarkHandshake(b *testing.B) {
	cliKey, relayKey := mustKey(b), mustKey(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		x, y := net.Pipe()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Server(ctx, y, relayKey)
			if err != nil {
				b.Error(err)
				return
			}
			s.Close()
		}()
		c, err := Client(ctx, x, cliKey, relayKey.Public)
		if err != nil {
			b.Fatal(err)
		}
		wg.Wait()
		c.Close()
	}
}

// BenchmarkIdleMemory establishes N channels over loopback TCP, the relay
// side of each blocked in Recv as a relay's would be, and reports heap and
// goroutine-stack bytes per idle channel end (client and relay ends both
// live in this process, so the per-end figure is the pair's cost / 2; the
// net.TCPConn and runtime poller state are included, kernel socket buffers
// are not). Exchanging one frame first makes sure every lazily allocated
// buffer was allocated and released.
func BenchmarkIdleMemory(b *testing.B) {
	const n = 1000
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		ctx, cancel := context.WithCancel(context.Background())
		clis := make([]*Conn, 0, n)
		srvs := make([]*Conn, 0, n)
		var wg sync.WaitGroup
		for range n {
			c, s := tcpPair(b)
			ping, _ := wire.NewFrame(wire.Ping{Nonce: 1})
			c.Send(ctx, ping)
			s.Recv(ctx)
			clis, srvs = append(clis, c), append(srvs, s)
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.Recv(ctx)
			}()
		}
		time.Sleep(100 * time.Millisecond)
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap := float64(after.HeapAlloc-before.HeapAlloc) / (2 * n)
		stack := float64(after.StackInuse-before.StackInuse) / n
		b.ReportMetric(heap, "heap-B/end")
		b.ReportMetric(stack, "stack-B/relay-end")
		b.ReportMetric(heap*2+stack, "B/relay-end+client-end")
		runtime.KeepAlive(clis)
		cancel()
		for i := range clis {
			clis[i].Close()
			srvs[i].Close()
		}
		wg.Wait()
	}
}

// BenchmarkSmallFrames sends 256-byte frames one way over loopback TCP from
// one goroutine and from 8 concurrent goroutines (one op = one frame), with
// the receiver's Recv using a cancellable context as a relay's does.
func BenchmarkSmallFrames(b *testing.B) {
	for _, senders := range []int{1, 8} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			cli, srv := tcpPair(b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f := wire.Frame{Type: wire.TypeSend, Payload: make([]byte, 256)}
			n := b.N
			done := make(chan error, 1)
			go func() {
				for range n {
					if _, err := srv.Recv(ctx); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			var wg sync.WaitGroup
			for s := range senders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := s; i < n; i += senders {
						if err := cli.Send(ctx, f); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(n), "CPU-µs/frame")
		})
	}
}
