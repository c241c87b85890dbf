package censor

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor/censortest"
)

// syncBuffer is the middlebox tests' log.
type syncBuffer = censortest.Buffer

// upstream is a test server behind the middlebox.
type upstream struct {
	addr     string
	received atomic.Int64
	mu       sync.Mutex
	ends     []string // how each connection ended: EOF, RST, closed
}

func (u *upstream) endings() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.ends...)
}

// startUpstream starts a server on 127.0.0.1 that sends banner, then
// echoes (echo) or discards what it reads.
func startUpstream(t testing.TB, banner string, echo bool) *upstream {
	t.Helper()
	return startUpstreamOn(t, "127.0.0.1", banner, echo)
}

// startUpstreamOn is startUpstream on the loopback address ip.
func startUpstreamOn(t testing.TB, ip, banner string, echo bool) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				if banner != "" {
					_, _ = io.WriteString(c, banner)
				}
				buf := make([]byte, 64<<10)
				var err error
				for {
					var n int
					n, err = c.Read(buf)
					u.received.Add(int64(n))
					if echo && n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							err = werr
						}
					}
					if err != nil {
						break
					}
				}
				end := "closed"
				switch {
				case errors.Is(err, io.EOF):
					end = "EOF"
					_ = c.(*net.TCPConn).CloseWrite()
				case isReset(err):
					end = "RST"
				}
				u.mu.Lock()
				u.ends = append(u.ends, end)
				u.mu.Unlock()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return u
}

// startMiddlebox serves m on 127.0.0.1 and returns its address and log.
func startMiddlebox(t testing.TB, m *Middlebox) (string, *syncBuffer) {
	t.Helper()
	log := &syncBuffer{}
	if m.Log == nil {
		m.Log = log
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrMiddleboxClosed) {
			t.Errorf("Serve returned %v, want ErrMiddleboxClosed", err)
		}
	})
	return ln.Addr().String(), log
}

// dialFrom connects to addr from the loopback address ip.
func dialFrom(t testing.TB, ip, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// waitLog waits for the log to hold n lines and returns them.
func waitLog(t testing.TB, log *syncBuffer, n int) []LogEntry {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := log.String()
		lines := strings.Split(strings.TrimSpace(s), "\n")
		if s != "" && len(lines) >= n {
			var out []LogEntry
			for _, l := range lines {
				dec := json.NewDecoder(strings.NewReader(l))
				dec.DisallowUnknownFields()
				var e LogEntry
				if err := dec.Decode(&e); err != nil {
					t.Fatalf("log line %q: %v", l, err)
				}
				out = append(out, e)
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("log has %d lines, want %d:\n%s", len(lines), n, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// entryFor returns the log entry of the flow from client ip.
func entryFor(t testing.TB, es []LogEntry, ip string) LogEntry {
	t.Helper()
	for _, e := range es {
		if strings.HasPrefix(e.Client, ip+":") {
			return e
		}
	}
	t.Fatalf("no log entry for client %s in %+v", ip, es)
	return LogEntry{}
}

// expectHang checks that nothing arrives on c for a while and that c is
// not closed: the censor dropped the flow.
func expectHang(t testing.TB, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read %d bytes, %v; want a timeout (dropped flow)", n, err)
	}
	_ = c.SetReadDeadline(time.Time{})
}

// echoes checks that msg comes back on c.
func echoes(t testing.TB, c net.Conn, msg []byte) {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %v (got %d bytes)", err, len(got))
	}
	_ = c.SetReadDeadline(time.Time{})
}

func TestMiddleboxOpen(t *testing.T) {
	up := startUpstream(t, "", true)
	addr, log := startMiddlebox(t, &Middlebox{Upstream: up.addr, Policy: mustLoad(t, "open")})
	c := dialFrom(t, "127.0.0.2", addr)
	msg := append([]byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), randomBytes(seeded(20), 1<<20)...)
	go func() {
		_, _ = c.Write(msg)
		_ = c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through the middlebox: %v, %d of %d bytes", err, len(got), len(msg))
	}
	c.Close()
	e := waitLog(t, log, 1)[0]
	if e.Action != Pass || e.Rule != "" || e.Kind != KindHTTP || e.Host != "a.example" ||
		e.BytesUp != int64(len(msg)) || e.BytesDown != int64(len(msg)) || e.ServerClose != "FIN" || e.Server != up.addr {
		t.Errorf("log entry %+v", e)
	}
}

func TestMiddleboxFET(t *testing.T) {
	up := startUpstream(t, "", true)
	clock := &FakeClock{}
	addr, log := startMiddlebox(t, &Middlebox{
		Upstream: up.addr, Clock: clock, Rand: seeded(21),
		Policy: mustPolicy(t, `{"name":"fet-p1","rules":[{"name":"fet","fet":{"probability":1}}]}`),
	})
	r := seeded(22)

	// A random-looking first packet from user .2: dropped silently.
	c := dialFrom(t, "127.0.0.2", addr)
	if _, err := c.Write(suspicious(r)); err != nil {
		t.Fatal(err)
	}
	expectHang(t, c)
	c.Close()
	e := waitLog(t, log, 1)[0]
	if e.Rule != "fet" || e.Action != Drop || e.BytesUp != 0 || !strings.Contains(e.Evidence, "no exemption") {
		t.Errorf("log entry %+v, want a drop by fet", e)
	}

	// The same user again, with an innocent first packet: the 3-tuple is
	// blocked for 180 s.
	c = dialFrom(t, "127.0.0.2", addr)
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	expectHang(t, c)
	c.Close()
	e = waitLog(t, log, 2)[1]
	if e.Rule != "fet" || e.Action != Drop || !strings.Contains(e.Evidence, "3-tuple") {
		t.Errorf("log entry %+v, want the residual block", e)
	}

	// Another user is not affected, nor are exempt packets.
	c = dialFrom(t, "127.0.0.3", addr)
	echoes(t, c, []byte("GET / HTTP/1.1\r\n\r\n"))
	c.Close()

	// After 180 s the first user gets through again.
	clock.Advance(FETResidual)
	c = dialFrom(t, "127.0.0.2", addr)
	echoes(t, c, []byte("GET / HTTP/1.1\r\n\r\n"))
	c.Close()
	es := waitLog(t, log, 4)[2:] // flows are logged when they end, in any order
	if e := entryFor(t, es, "127.0.0.3"); e.Action != Pass {
		t.Errorf("log entry %+v, want user .3 passed", e)
	}
	if e := entryFor(t, es, "127.0.0.2"); e.Action != Pass {
		t.Errorf("log entry %+v, want user .2 passed after 180 s", e)
	}
	if n := up.received.Load(); n != 2*18 {
		t.Errorf("upstream received %d bytes, want only the two passed requests (36)", n)
	}
}

func TestMiddleboxSNIReset(t *testing.T) {
	up := startUpstream(t, "", true)
	addr, log := startMiddlebox(t, &Middlebox{Upstream: up.addr, Policy: mustLoad(t, "whatsapp-2017-07"), Rand: seeded(23), Clock: &FakeClock{}})
	c := dialFrom(t, "127.0.0.4", addr)
	tc := tls.Client(c, &tls.Config{ServerName: "mmg.whatsapp.net", InsecureSkipVerify: true})
	err := tc.Handshake()
	if !isReset(err) {
		t.Fatalf("handshake through the censor: %v, want ECONNRESET", err)
	}
	e := waitLog(t, log, 1)[0]
	if e.Rule != "sni-media" || e.Action != Reset || e.Host != "mmg.whatsapp.net" || e.JA4 == "" {
		t.Errorf("log entry %+v", e)
	}
	// The server's side was reset too.
	deadline := time.Now().Add(5 * time.Second)
	for len(up.endings()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := up.endings(); len(got) != 1 || got[0] != "RST" {
		t.Errorf("upstream connection ended %v, want [RST]", got)
	}
}

func TestMiddleboxServerFirst(t *testing.T) {
	const banner = "SSH-2.0-OpenSSH_9.6\r\n"
	up := startUpstream(t, banner, true)
	addr, log := startMiddlebox(t, &Middlebox{Upstream: up.addr, Policy: mustLoad(t, "whitelist")})
	c := dialFrom(t, "127.0.0.5", addr)
	got := make([]byte, len(banner))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != banner {
		t.Fatalf("banner before the client spoke: %q, %v", got, err)
	}
	if _, err := c.Write([]byte("SSH-2.0-client\r\n")); err != nil {
		t.Fatal(err)
	}
	expectHang(t, c)
	c.Close()
	e := waitLog(t, log, 1)[0]
	if e.Rule != "whitelist" || e.Action != Drop || e.BytesDown != int64(len(banner)) || e.BytesUp != 0 {
		t.Errorf("log entry %+v", e)
	}
}

func TestMiddleboxThrottle(t *testing.T) {
	up := startUpstream(t, "", false)
	clock := &FakeClock{}
	addr, log := startMiddlebox(t, &Middlebox{Upstream: up.addr, Policy: mustLoad(t, "throttle"), Clock: clock})
	c := dialFrom(t, "127.0.0.6", addr)
	const total = 200 << 10
	start := clock.Now()
	if _, err := c.Write(bytes.Repeat([]byte{0xa5}, total)); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	e := waitLog(t, log, 1)[0]
	elapsed := clock.Now().Sub(start)
	if e.Action != Throttle || e.BytesUp != total || up.received.Load() != total {
		t.Fatalf("log entry %+v, upstream got %d", e, up.received.Load())
	}
	rate := float64(total-throttleBurst) * 8 / elapsed.Seconds()
	if rate < 0.98*ThrottleRateBPS || rate > 1.02*ThrottleRateBPS {
		t.Errorf("throttled rate %.0f bit/s (%d bytes in %v of the censor's clock), want %d +- 2%%", rate, total, elapsed, ThrottleRateBPS)
	}
}

func TestMiddleboxOutage(t *testing.T) {
	up := startUpstream(t, "", true)
	clock := &FakeClock{}
	addr, log := startMiddlebox(t, &Middlebox{
		Upstream: up.addr, Clock: clock, Rand: seeded(24),
		Policy: mustPolicy(t, `{"name":"o","rules":[{"outage":{"up_min":"1m","up_max":"1m","down_min":"30s","down_max":"30s"}}]}`),
	})
	c := dialFrom(t, "127.0.0.7", addr)
	echoes(t, c, []byte("hello"))
	clock.Advance(61 * time.Second) // into the outage
	_, _ = c.Write([]byte("again"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 5)); !isReset(err) && !errors.Is(err, io.EOF) {
		t.Errorf("existing connection during an outage: %v, want it cut", err)
	}
	// The reset may come before the dial returns or at the first read.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.8")}}
	c2, err := d.Dial("tcp", addr)
	if err == nil {
		defer c2.Close()
		_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c2.Read(make([]byte, 1))
	}
	if !isReset(err) {
		t.Errorf("new connection during an outage: %v, want ECONNRESET", err)
	}
	clock.Advance(30 * time.Second) // back up
	c3 := dialFrom(t, "127.0.0.9", addr)
	echoes(t, c3, []byte("up again"))
	c3.Close()
	es := waitLog(t, log, 3)
	if e := entryFor(t, es, "127.0.0.7"); e.Rule != "outage" || e.Action != Reset {
		t.Errorf("cut flow: %+v", e)
	}
	if e := entryFor(t, es, "127.0.0.8"); e.Rule != "outage" || e.Action != Reset {
		t.Errorf("refused flow: %+v", e)
	}
}

// closeAfter50 is a server that reads at most 50 bytes and closes: the
// kind of bug Frolov et al. found in real proxies.
func closeAfter50(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, _ = io.ReadFull(c, make([]byte, 50))
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// stockWebServer is a Go net/http server on 127.0.0.1, like the engine's
// reference.
func stockWebServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, refPage)
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

func TestMiddleboxProbing(t *testing.T) {
	for _, tt := range []struct {
		name    string
		server  func(testing.TB) string
		blocked bool
	}{
		{"closes after 50 bytes", closeAfter50, true},
		{"stock web server", stockWebServer, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			server := tt.server(t)
			logs := &syncBuffer{}
			m := &Middlebox{
				Upstream: server, Policy: mustLoad(t, "probing"), Rand: seeded(25),
				// Two probes at a time each: on a loaded machine, many in
				// parallel make the times to close noisy.
				Prober: &Prober{ReadTimeout: 500 * time.Millisecond, Concurrency: 2},
				Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
			}
			addr, log := startMiddlebox(t, m)
			c := dialFrom(t, "127.0.0.10", addr)
			_, _ = c.Write(suspicious(seeded(26))[:200])
			time.Sleep(50 * time.Millisecond)
			c.Close()
			deadline := time.Now().Add(60 * time.Second)
			for !strings.Contains(logs.String(), "censor probed server") && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if !strings.Contains(logs.String(), "censor probed server") {
				t.Fatalf("no probe within 60 s; engine log:\n%s", logs)
			}
			es := waitLog(t, log, 1)
			if e := entryFor(t, es, "127.0.0.10"); e.Action != Pass {
				t.Errorf("the triggering flow: %+v, want pass", e)
			}
			c2 := dialFrom(t, "127.0.0.11", addr)
			if tt.blocked {
				expectHang(t, c2)
				c2.Close()
				es = waitLog(t, log, 3)
				var block LogEntry
				for _, e := range es {
					if e.Client == "" {
						block = e
					}
				}
				if block.Rule != "probe" || block.Action != Drop || block.Server != server || !strings.Contains(block.Evidence, "reacts unlike reference") {
					t.Errorf("block entry %+v", block)
				}
				if e := entryFor(t, es, "127.0.0.11"); e.Rule != "probe" || e.Action != Drop {
					t.Errorf("later flow: %+v, want dropped by probe", e)
				}
			} else {
				if _, err := c2.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
					t.Fatal(err)
				}
				_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(c2).ReadString('\n')
				if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
					t.Errorf("web server after probing: %q, %v; want it not blocked", line, err)
				}
				if strings.Contains(log.String(), `"rule":"probe"`) {
					t.Errorf("a stock web server was blocked:\n%s", log)
				}
			}
		})
	}
}

func TestMiddleboxCloseIdempotent(t *testing.T) {
	m := &Middlebox{Upstream: "127.0.0.1:9"}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Serve(context.Background(), ln); !errors.Is(err, ErrMiddleboxClosed) {
		t.Errorf("Serve after Close = %v, want ErrMiddleboxClosed", err)
	}
}

func TestMiddleboxServeContext(t *testing.T) {
	up := startUpstream(t, "", true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &Middlebox{Upstream: up.addr, Policy: mustPolicy(t, `{"name":"fet-p1","rules":[{"name":"fet","fet":{"probability":1}}]}`)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, ln) }()
	c := dialFrom(t, "127.0.0.12", ln.Addr().String())
	echoes(t, c, []byte("GET hi"))
	// Two flows that hang: one dropped on its first packet, one blocked
	// when it opens. Serve must end them too.
	d1 := dialFrom(t, "127.0.0.13", ln.Addr().String())
	_, _ = d1.Write(suspicious(seeded(27)))
	expectHang(t, d1)
	d2 := dialFrom(t, "127.0.0.13", ln.Addr().String())
	expectHang(t, d2)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel = %v, want nil", err)
	}
	// The open flow was closed with Serve.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, syscall.ETIMEDOUT) {
		t.Errorf("flow after Serve returned: %v, want closed", err)
	}
	_ = m.Close()
}

// TestMiddleboxSplitHello checks that a ClientHello split over several
// writes is reassembled before the verdict: the captured Chromium hello
// passes the tls-gate, a Go crypto/tls hello does not.
func TestMiddleboxSplitHello(t *testing.T) {
	up := startUpstream(t, "", false)
	addr, log := startMiddlebox(t, &Middlebox{Upstream: up.addr, Policy: mustLoad(t, "tls-gate")})
	for i, tt := range []struct {
		name  string
		hello []byte
		want  Action
	}{
		{"chromium", capturedHello(t), Pass},
		{"go", goClientHello(t, "example.com"), Reset},
	} {
		ip := []string{"127.0.0.30", "127.0.0.31"}[i]
		c := dialFrom(t, ip, addr)
		for _, part := range [][]byte{tt.hello[:3], tt.hello[3:200], tt.hello[200:]} {
			if _, err := c.Write(part); err != nil {
				t.Fatal(err)
			}
			time.Sleep(30 * time.Millisecond) // separate reads at the middlebox
		}
		if tt.want == Pass {
			expectHang(t, c) // the upstream discards: no reset, no answer
		} else {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); !isReset(err) {
				t.Errorf("%s: read %v, want ECONNRESET", tt.name, err)
			}
		}
		c.Close()
		e := entryFor(t, waitLog(t, log, i+1), ip)
		if e.Action != tt.want || e.Kind != KindTLS || e.JA4 == "" {
			t.Errorf("%s: log entry %+v, want %s with a JA4", tt.name, e, tt.want)
		}
	}
}

// TestMiddleboxUpstreamName checks that an upstream given by name keys
// the censor's state like its address: a residual block holds.
func TestMiddleboxUpstreamName(t *testing.T) {
	up := startUpstream(t, "", true)
	_, port, _ := net.SplitHostPort(up.addr)
	addr, log := startMiddlebox(t, &Middlebox{
		Upstream: net.JoinHostPort("localhost", port), Rand: seeded(28),
		Policy: mustPolicy(t, `{"name":"fet-p1","rules":[{"name":"fet","fet":{"probability":1}}]}`),
		// localhost may resolve to ::1 first; the upstream listens on IPv4.
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, up.addr)
		},
	})
	c := dialFrom(t, "127.0.0.40", addr)
	_, _ = c.Write(suspicious(seeded(29)))
	expectHang(t, c)
	c.Close()
	c = dialFrom(t, "127.0.0.40", addr)
	expectHang(t, c)
	c.Close()
	residual := 0
	for _, e := range waitLog(t, log, 2) {
		if e.Rule != "fet" || e.Action != Drop {
			t.Errorf("flow %+v, want a drop by fet", e)
		}
		if strings.Contains(e.Evidence, "3-tuple "+e.Client[:strings.LastIndex(e.Client, ":")]) {
			residual++
		}
	}
	if residual != 1 {
		t.Errorf("%d flows blocked by the residual block, want 1", residual)
	}
}

// TestMiddleboxOutageDrop checks an outage that drops rather than resets,
// as in whatsapp-2017-09: an existing flow's bytes vanish and the flow
// stays open; a new flow opened during the outage hangs.
func TestMiddleboxOutageDrop(t *testing.T) {
	up := startUpstream(t, "", true)
	clock := &FakeClock{}
	addr, log := startMiddlebox(t, &Middlebox{
		Upstream: up.addr, Clock: clock, Rand: seeded(34),
		Policy: mustPolicy(t, `{"name":"o","rules":[{"outage":{"kinds":["other"],"up_min":"1m","up_max":"1m","down_min":"30s","down_max":"30s","new":"drop","existing":"drop"}}]}`),
	})
	c := dialFrom(t, "127.0.0.41", addr)
	echoes(t, c, []byte{0x01, 0x02, 0x03}) // "other": watched by the outage rule
	h := dialFrom(t, "127.0.0.42", addr)
	echoes(t, h, []byte("GET / HTTP/1.1\r\n\r\n")) // HTTP: not matched
	clock.Advance(61 * time.Second)
	if _, err := c.Write([]byte{0x04}); err != nil {
		t.Fatal(err)
	}
	expectHang(t, c)
	echoes(t, h, []byte("GET /again HTTP/1.1\r\n\r\n"))
	n := dialFrom(t, "127.0.0.43", addr)
	if _, err := n.Write([]byte{0x05, 0x06}); err != nil {
		t.Fatal(err)
	}
	expectHang(t, n)
	c.Close()
	n.Close()
	es := waitLog(t, log, 2)
	if e := entryFor(t, es, "127.0.0.41"); e.Rule != "outage" || e.Action != Drop || e.BytesUp != 3 {
		t.Errorf("existing flow: %+v, want dropped by the outage after 3 bytes", e)
	}
	if e := entryFor(t, es, "127.0.0.43"); e.Action != Drop || e.BytesUp != 0 {
		t.Errorf("new flow: %+v, want dropped", e)
	}
}

func TestWrapResidualBlock(t *testing.T) {
	e := &Engine{Policy: mustPolicy(t, `{"name":"p1","rules":[{"fet":{"probability":1}}]}`), Rand: seeded(35), Clock: &FakeClock{}}
	a, b := net.Pipe()
	defer b.Close()
	c := e.Wrap(a, clientN(1), testServer)
	if n, err := c.Write(suspicious(seeded(36))); n != 1000 || err != nil {
		t.Fatalf("write: %d, %v; want the bytes swallowed", n, err)
	}
	c.Close()
	a2, b2 := net.Pipe()
	defer b2.Close()
	c2 := e.Wrap(a2, clientN(1), testServer)
	defer c2.Close()
	if v := c2.(interface{ Verdict() Verdict }).Verdict(); v.Action != Drop || v.Rule != "fet" {
		t.Errorf("second connection: %+v, want the residual drop", v)
	}
	if _, err := c2.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = b2.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _ := b2.Read(make([]byte, 1)); n != 0 {
		t.Errorf("the server got %d bytes through a residual block", n)
	}
}
