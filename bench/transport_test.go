package bench

import (
	"context"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"gitlab.com/yawning/obfs4.git/transports/obfs4"
	pt "gitlab.torproject.org/tpo/anti-censorship/pluggable-transports/goptlib"

	"github.com/ferry-im/ferry/transport/obfs"
	"github.com/ferry-im/ferry/transport/tcp"
)

// A setup is one transport under benchmark: a listener of server-side
// conns and a dial of client-side ones, over loopback TCP.
type setup struct {
	ln   net.Listener
	dial func(ctx context.Context) (net.Conn, error)
}

var setups = []struct {
	name string
	new  func(b *testing.B) setup
}{
	{"tcp", newTCP},
	{"obfs", newObfs},
	{"obfs4", newObfs4},
	{"https", newHTTPS},
	{"tls", newTLS},
}

func loopback(b *testing.B) net.Listener {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}

func newTCP(b *testing.B) setup {
	l := loopback(b)
	ep := tcp.Server{}.Endpoint(l.Addr().String())
	d := tcp.New(tcp.Config{})
	return setup{ln: l, dial: func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, ep) }}
}

func newObfs(b *testing.B) setup {
	key, err := obfs.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := obfs.NewServer(obfs.ServerConfig{Key: key})
	if err != nil {
		b.Fatal(err)
	}
	raw := loopback(b)
	l := srv.Listener(raw)
	b.Cleanup(func() { l.Close() })
	ep := srv.Endpoint(raw.Addr().String())
	d := obfs.New(obfs.Config{})
	return setup{ln: l, dial: func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, ep) }}
}

// obfs4Listener runs obfs4's server handshake on each accepted conn.
type obfs4Listener struct {
	net.Listener
	wrap func(net.Conn) (net.Conn, error)
}

func (l obfs4Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if w, err := l.wrap(c); err == nil {
			return w, nil
		}
		c.Close()
	}
}

// newObfs4 sets up obfs4 itself (iat-mode 0, as Tor bridges default to).
func newObfs4(b *testing.B) setup {
	t := &obfs4.Transport{}
	sf, err := t.ServerFactory(b.TempDir(), &pt.Args{})
	if err != nil {
		b.Fatal(err)
	}
	cf, err := t.ClientFactory("")
	if err != nil {
		b.Fatal(err)
	}
	raw := loopback(b)
	addr := raw.Addr().String()
	return setup{
		ln: obfs4Listener{Listener: raw, wrap: sf.WrapConn},
		dial: func(ctx context.Context) (net.Conn, error) {
			args, err := cf.ParseArgs(sf.Args())
			if err != nil {
				return nil, err
			}
			var d net.Dialer
			return cf.Dial("tcp", addr, func(n, a string) (net.Conn, error) { return d.DialContext(ctx, n, a) }, args)
		},
	}
}

// connect dials one conn and accepts its server side.
func connect(b *testing.B, s setup) (client, server net.Conn) {
	b.Helper()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := s.ln.Accept()
		if err != nil {
			close(acc)
			return
		}
		acc <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.dial(ctx)
	if err != nil {
		b.Fatal(err)
	}
	srv, ok := <-acc
	if !ok {
		b.Fatal("accept failed")
	}
	return c, srv
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkThroughput sends one stream client to server in 32 KiB writes;
// the server reads into a 32 KiB buffer. Besides MB/s it reports the CPU
// time of the whole process (both ends, user and system) per GiB moved.
func BenchmarkThroughput(b *testing.B) {
	for _, st := range setups {
		b.Run(st.name, func(b *testing.B) {
			c, s := connect(b, st.new(b))
			defer c.Close()
			defer s.Close()
			accepted := func() (net.Conn, error) { return s, nil }
			b.ReportMetric(throughput(b, c, accepted, cpuTime)[0], "cpu-s/GiB")
		})
	}
}

// throughput writes b.N chunks of 32 KiB to c, while a goroutine reads
// them, into a 32 KiB buffer, from the conn accept returns. It returns,
// for each of cpus (CPU time so far of what it measures), the CPU seconds
// spent per GiB moved.
func throughput(b *testing.B, c net.Conn, accept func() (net.Conn, error), cpus ...func() time.Duration) []float64 {
	const chunk = 32 << 10
	buf := make([]byte, chunk)
	done := make(chan int64)
	want := int64(b.N) * chunk
	b.SetBytes(chunk)
	b.ResetTimer()
	cpu0 := make([]time.Duration, len(cpus))
	for i, f := range cpus {
		cpu0[i] = f()
	}
	go func() {
		s, err := accept()
		if err != nil {
			done <- 0
			return
		}
		n, _ := io.CopyBuffer(io.Discard, io.LimitReader(s, want), make([]byte, chunk))
		done <- n
	}()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if n := <-done; n != want {
		b.Fatalf("server read %d bytes, want %d", n, want)
	}
	b.StopTimer()
	gib := float64(want) / (1 << 30)
	per := make([]float64, len(cpus))
	for i, f := range cpus {
		per[i] = (f() - cpu0[i]).Seconds() / gib
	}
	return per
}

// BenchmarkDialFirstByte measures from the start of a dial to the first
// byte echoed back by the server: TCP connect, the transport's handshake,
// one write and one read.
func BenchmarkDialFirstByte(b *testing.B) {
	for _, st := range setups {
		b.Run(st.name, func(b *testing.B) {
			s := st.new(b)
			var wg sync.WaitGroup
			defer wg.Wait()
			wg.Go(func() {
				for {
					c, err := s.ln.Accept()
					if err != nil {
						return
					}
					wg.Go(func() {
						buf := make([]byte, 1)
						if _, err := io.ReadFull(c, buf); err == nil {
							c.Write(buf)
						}
						io.Copy(io.Discard, c)
						c.Close()
					})
				}
			})
			defer s.ln.Close()
			one := []byte{1}
			for b.Loop() {
				c, err := s.dial(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				c.Write(one)
				if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkIdleConn opens 500 connections, with a goroutine blocked in
// Read on each end as a relay and a client have, and reports the Go heap
// and stack they hold per connection (both ends together, after a GC;
// kernel socket buffers are not counted).
func BenchmarkIdleConn(b *testing.B) {
	const n = 500
	for _, st := range setups {
		b.Run(st.name, func(b *testing.B) {
			s := st.new(b)
			for b.Loop() {
				before := memInUse()
				var conns []net.Conn
				var wg sync.WaitGroup
				for range n {
					c, srv := connect(b, s)
					conns = append(conns, c, srv)
					for _, x := range []net.Conn{c, srv} {
						wg.Go(func() { x.Read(make([]byte, 1)) })
					}
				}
				time.Sleep(100 * time.Millisecond)
				after := memInUse()
				b.ReportMetric(float64(after-before)/n/1024, "KiB/conn")
				for _, c := range conns {
					c.Close()
				}
				wg.Wait()
			}
		})
	}
}

func memInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}
