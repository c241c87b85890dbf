package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport/https"
	"github.com/ferry-im/ferry/transport/obfs"
	"github.com/ferry-im/ferry/transport/tcp"
)

// childEnv tells the test binary, run again as a child, to dial conns for
// BenchmarkIdleRelayConn: "KIND N ENDPOINT".
const childEnv = "FERRY_BENCH_IDLE_CLIENT"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(idleClients(spec))
	}
	os.Exit(m.Run())
}

// idleClients dials N conns of KIND to ENDPOINT, writes one byte on each,
// prints "ready", and holds them until standard input closes.
func idleClients(spec string) int {
	f := strings.Fields(spec)
	n, _ := strconv.Atoi(f[1])
	dial, err := childDialer(f[0], f[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var conns []net.Conn
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := dial(ctx)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		c.Write([]byte{1})
		conns = append(conns, c)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	return 0
}

func childDialer(kind, ep string) (func(context.Context) (net.Conn, error), error) {
	if kind == "tls" {
		d := &tls.Dialer{Config: &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true}}
		return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", ep) }, nil
	}
	e, err := link.ParseEndpoint(ep)
	if err != nil {
		return nil, err
	}
	var d interface {
		DialContext(context.Context, link.Endpoint) (net.Conn, error)
	}
	switch kind {
	case "tcp":
		d = tcp.New(tcp.Config{})
	case "obfs":
		d = obfs.New(obfs.Config{})
	case "https":
		d = https.New(https.Config{})
	default:
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, e) }, nil
}

// relaySetups are the relay halves BenchmarkIdleRelayConn measures, each
// with the endpoint text a child process dials.
var relaySetups = []struct {
	name string
	new  func(b *testing.B) (net.Listener, string)
}{
	{"tcp", func(b *testing.B) (net.Listener, string) {
		l := loopback(b)
		return l, tcp.Server{}.Endpoint(l.Addr().String()).String()
	}},
	{"obfs", func(b *testing.B) (net.Listener, string) {
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
		return l, srv.Endpoint(raw.Addr().String()).String()
	}},
	{"https", func(b *testing.B) (net.Listener, string) {
		srv := newHTTPSServer(b)
		raw := loopback(b)
		l := srv.Listener(raw)
		b.Cleanup(func() { l.Close() })
		return l, srv.Endpoint(raw.Addr().String()).String()
	}},
	{"tls", func(b *testing.B) (net.Listener, string) {
		cert, _ := benchCert(b)
		l := tls.NewListener(loopback(b), &tls.Config{Certificates: []tls.Certificate{cert}})
		return handshakeListener{l}, l.Addr().String()
	}},
}

// BenchmarkIdleRelayConn measures the relay half alone: a child process
// opens 500 connections and writes a byte on each; this process accepts
// them, reads the byte and keeps a goroutine blocked in Read on each, as
// the relay does, and reports the Go heap and stack they hold per
// connection after a GC (kernel socket buffers are not counted).
func BenchmarkIdleRelayConn(b *testing.B) {
	const n = 500
	for _, st := range relaySetups {
		b.Run(st.name, func(b *testing.B) {
			l, ep := st.new(b)
			for b.Loop() {
				before := memInUse()
				conns, stop := acceptChild(b, l, st.name, ep, n)
				time.Sleep(100 * time.Millisecond)
				b.ReportMetric(float64(memInUse()-before)/n/1024, "KiB/conn")
				stop()
				for _, c := range conns {
					c.Close()
				}
			}
		})
	}
}

// acceptChild starts the child that dials n conns to ep and accepts them,
// each with a goroutine blocked in Read after the first byte.
func acceptChild(b *testing.B, l net.Listener, kind, ep string, n int) ([]net.Conn, func()) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %s", childEnv, kind, n, ep))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var conns []net.Conn
	var wg sync.WaitGroup
	for range n {
		c, err := l.Accept()
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		wg.Go(func() {
			buf := make([]byte, 1)
			if _, err := io.ReadFull(c, buf); err == nil {
				c.Read(buf)
			}
		})
	}
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		b.Fatalf("child said %q", line)
	}
	return conns, func() {
		stdin.Close()
		cmd.Wait()
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}
}
