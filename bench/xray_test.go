package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Xray REALITY beside Ferry's transports: one stream through an Xray
// client and server (VLESS, REALITY, xtls-rprx-vision) on loopback, each a
// child process of the benchmark. The benchmark writes into the client's
// dokodemo-door inbound; the server's freedom outbound delivers to a sink
// the benchmark reads. REALITY's "dest" (the site it borrows a handshake
// from) is a crypto/tls server the benchmark starts. XRAY_BIN names the
// xray binary; docs/benchmarks.md says which commit and how it is built.
//
// Unlike the in-process benchmarks, a byte crosses three loopback TCP
// connections (benchmark to client, client to server, server to sink),
// so cpu-s/GiB counts two plain TCP hops more than https's; xray-cpu-s/GiB
// is the two Xray processes alone.

// xrayEnv names the xray binary; without it BenchmarkThroughputXray skips.
const xrayEnv = "XRAY_BIN"

// BenchmarkThroughputXray is BenchmarkThroughput for Xray REALITY. Its
// cpu-s/GiB adds the Xray processes' CPU time (user and system, from
// /proc) to the benchmark process's.
func BenchmarkThroughputXray(b *testing.B) {
	bin := os.Getenv(xrayEnv)
	if bin == "" {
		b.Skipf("%s is not set: build xray as docs/benchmarks.md says and set %s to its path to compare with Xray REALITY", xrayEnv, xrayEnv)
	}
	b.Run("reality", func(b *testing.B) {
		x := startXray(b, bin)
		c, err := net.DialTimeout("tcp", x.inbound, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		var s net.Conn
		defer func() {
			if s != nil {
				s.Close()
			}
		}()
		accept := func() (net.Conn, error) {
			var err error
			s, err = x.sink.Accept()
			return s, err
		}
		xcpu := func() time.Duration { return x.cpu(b) }
		per := throughput(b, c, accept, func() time.Duration { return cpuTime() + xcpu() }, xcpu)
		b.ReportMetric(per[0], "cpu-s/GiB")
		b.ReportMetric(per[1], "xray-cpu-s/GiB")
	})
}

// xray is a running Xray REALITY client and server.
type xray struct {
	inbound string       // the client's dokodemo-door inbound
	sink    net.Listener // where the server's outbound delivers
	pids    []int
}

// cpu is the Xray processes' CPU time so far.
func (x *xray) cpu(b *testing.B) time.Duration {
	var total time.Duration
	for _, pid := range x.pids {
		d, err := procCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		total += d
	}
	return total
}

// procCPU is a process's user and system time, from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read the CPU time of xray (this benchmark needs Linux's /proc): %w", err)
	}
	// Fields after the command name, which is in parentheses: state is
	// field 3, utime 14, stime 15, in clock ticks (USER_HZ, 100 on Linux).
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: bad utime or stime", pid)
	}
	return time.Duration(utime+stime) * (time.Second / 100), nil
}

// startXray starts the dest, the sink, and an Xray server and client with
// fresh keys, and waits until both Xray processes listen. Everything is
// stopped when b ends.
func startXray(b *testing.B, bin string) *xray {
	dir := b.TempDir()
	priv, pub := xrayKeys(b, bin)
	id := uuid4(b)
	dest := startDest(b)
	sink := loopback(b)
	serverPort, clientPort := freePort(b), freePort(b)

	const sni = "www.example.com"
	server := map[string]any{
		"log": map[string]any{"loglevel": "warning"},
		"inbounds": []any{map[string]any{
			"listen":   "127.0.0.1",
			"port":     serverPort,
			"protocol": "vless",
			"settings": map[string]any{
				"clients":    []any{map[string]any{"id": id, "flow": "xtls-rprx-vision"}},
				"decryption": "none",
			},
			"streamSettings": map[string]any{
				"network":  "raw",
				"security": "reality",
				"realitySettings": map[string]any{
					"target":      dest,
					"serverNames": []string{sni},
					"privateKey":  priv,
					"shortIds":    []string{""},
				},
			},
		}},
		// Freedom refuses private addresses to VLESS clients unless a rule
		// allows them: the sink is on loopback.
		"outbounds": []any{map[string]any{"protocol": "freedom", "settings": map[string]any{
			"finalRules": []any{map[string]any{"action": "allow", "ip": []string{"127.0.0.1"}}},
		}}},
	}
	client := map[string]any{
		"log": map[string]any{"loglevel": "warning"},
		"inbounds": []any{map[string]any{
			"listen":   "127.0.0.1",
			"port":     clientPort,
			"protocol": "dokodemo-door",
			"settings": map[string]any{"address": "127.0.0.1", "port": sink.Addr().(*net.TCPAddr).Port, "network": "tcp"},
		}},
		"outbounds": []any{map[string]any{
			"protocol": "vless",
			"settings": map[string]any{"vnext": []any{map[string]any{
				"address": "127.0.0.1",
				"port":    serverPort,
				"users":   []any{map[string]any{"id": id, "flow": "xtls-rprx-vision", "encryption": "none"}},
			}}},
			"streamSettings": map[string]any{
				"network":  "raw",
				"security": "reality",
				"realitySettings": map[string]any{
					"serverName":  sni,
					"fingerprint": "chrome",
					"password":    pub,
					"shortId":     "",
				},
			},
		}},
	}
	x := &xray{inbound: net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPort)), sink: sink}
	for _, p := range []struct {
		name string
		cfg  map[string]any
		port int
	}{{"server", server, serverPort}, {"client", client, clientPort}} {
		x.pids = append(x.pids, runXray(b, bin, dir, p.name, p.cfg, p.port))
	}
	return x
}

// runXray writes cfg to DIR/NAME.json, starts xray with it, and waits
// until it listens on port (without connecting to it). The process is killed and waited for when b
// ends; its log is in DIR/NAME.log, shown if it does not come up.
func runXray(b *testing.B, bin, dir, name string, cfg map[string]any, port int) int {
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, name+".json")
	if err := os.WriteFile(path, js, 0o600); err != nil {
		b.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "-c", path)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatalf("start xray %s (is %s=%s an xray binary?): %v", name, xrayEnv, bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		logf.Close()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(60 * time.Second)
	for {
		if listening(b, port) {
			return cmd.Process.Pid
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logf.Name())
			b.Fatalf("xray %s exited before listening on %s; its log:\n%s", name, addr, log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			b.Fatalf("xray %s did not listen on %s within a minute; its log:\n%s", name, addr, log)
		}
	}
}

// listening reports whether a socket listens on the loopback TCP port,
// from /proc/net/tcp: a probe connection would not do, since one to the
// client's inbound is carried to the sink.
func listening(b *testing.B, port int) bool {
	raw, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		b.Fatalf("read /proc/net/tcp (this benchmark needs Linux): %v", err)
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == want && f[3] == "0A" { // 0A: LISTEN
			return true
		}
	}
	return false
}

// xrayKeys runs `xray x25519` for a REALITY key pair: the server's private
// key and the client's public key (which newer versions call password).
func xrayKeys(b *testing.B, bin string) (priv, pub string) {
	out, err := exec.Command(bin, "x25519").Output()
	if err != nil {
		b.Fatalf("xray x25519: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.ToLower(strings.ReplaceAll(k, " ", "")), strings.TrimSpace(v)
		switch {
		case strings.HasPrefix(k, "privatekey"):
			priv = v
		case strings.HasPrefix(k, "publickey"), strings.HasPrefix(k, "password"):
			pub = v
		}
	}
	if priv == "" || pub == "" {
		b.Fatalf("xray x25519 printed no key pair:\n%s", out)
	}
	return priv, pub
}

func uuid4(b *testing.B) string {
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}

// freePort is a loopback TCP port that was free a moment ago.
func freePort(b *testing.B) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startDest starts the TLS 1.3 server REALITY borrows its handshakes
// from (crypto/tls, a self-signed certificate for www.example.com) and
// returns its address.
func startDest(b *testing.B) string {
	cert, _ := benchCert(b)
	l := tls.NewListener(loopback(b), &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex // mu protects conns
	conns := map[net.Conn]struct{}{}
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				c.(*tls.Conn).HandshakeContext(ctx)
				io.Copy(io.Discard, c)
			})
		}
	})
	b.Cleanup(func() {
		cancel()
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}
