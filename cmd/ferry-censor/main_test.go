package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor"
	"github.com/ferry-im/ferry/censor/censortest"
)

func TestPolicies(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"policies"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, name := range censor.PolicyNames() {
		if !strings.Contains(out.String(), name+" ") {
			t.Errorf("policies output lacks %s:\n%s", name, out.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no upstream", []string{"--policy", "open"}, 2, "usage"},
		{"unknown flag", []string{"--nope"}, 2, "flag provided but not defined"},
		{"unknown policy", []string{"--upstream", "127.0.0.1:1", "--policy", "nope"}, 1, "no policy named"},
		{"extra argument", []string{"--upstream", "127.0.0.1:1", "extra"}, 2, "usage"},
		{"policies with args", []string{"policies", "x"}, 2, "usage"},
		{"probe dispatched", []string{"probe"}, 2, "usage: ferry-censor probe"},
		{"bad forward", []string{"--forward", "127.0.0.1:1"}, 2, "want LISTEN=UPSTREAM"},
		{"bad block", []string{"--upstream", "127.0.0.1:1", "--block", "relay.example"}, 1, "--block: "},
		{"block range with bits", []string{"--upstream", "127.0.0.1:1", "--block", "10.0.0.1/8"}, 1, "write 10.0.0.0/8"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		code := run(context.Background(), tt.args, &out, &errb)
		if code != tt.code || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", tt.name, code, errb.String(), tt.code, tt.want)
		}
	}
}

// lockedBuffer is the command's output, read while it runs.
type lockedBuffer = censortest.Buffer

// TestServe runs the command against an echo server with a policy file
// and checks the forwarding, a verdict and the log file.
func TestServe(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	dir := t.TempDir()
	policy := filepath.Join(dir, "sig.json")
	if err := os.WriteFile(policy, []byte(`{"name":"sig","rules":[{"name":"wa","signature":{"patterns":["57 41 04 01"],"action":"reset"}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "flows.jsonl")
	listen := freeAddr(t, "127.0.0.1")

	ctx, cancel := context.WithCancel(context.Background())
	var stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--listen", listen, "--upstream", up.Addr().String(), "--policy", policy, "--log", logPath, "--seed", "7"}, io.Discard, &stderr)
	}()
	c := dialCensor(t, listen, &stderr)
	if _, err := c.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "hello\n" {
		t.Fatalf("echo: %q, %v", line, err)
	}
	c.Close()
	c2, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c2.Write([]byte("WA\x04\x01\x00\x00\x05hello"))
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "reset") {
		t.Errorf("WhatsApp opening: read %v, want a reset", err)
	}
	c2.Close()
	// Both flows are logged.
	var lines []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(logPath)
		if lines = strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) >= 2 {
			break
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d after cancel; stderr: %s", code, stderr.String())
	}
	if len(lines) != 2 {
		t.Fatalf("log lines %q, want 2", lines)
	}
	var ents []censor.LogEntry
	for _, l := range lines {
		var e censor.LogEntry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		ents = append(ents, e)
	}
	// Flows are logged when they end, in any order.
	if ents[0].Action != censor.Pass {
		ents[0], ents[1] = ents[1], ents[0]
	}
	if ents[0].Action != censor.Pass || ents[0].BytesUp != 6 || ents[0].BytesDown != 6 {
		t.Errorf("first flow %+v", ents[0])
	}
	if ents[1].Rule != "wa" || ents[1].Action != censor.Reset {
		t.Errorf("second flow %+v", ents[1])
	}
}

// freeAddr returns a loopback address on ip for the censor to listen on
// (censortest.FreeAddr: a port no outgoing connection takes meanwhile).
func freeAddr(t *testing.T, ip string) string {
	t.Helper()
	return censortest.FreeAddr(t, ip)
}

// echoServer echoes every connection on a listener on ip.
func echoServer(t *testing.T, ip string) string {
	t.Helper()
	return censortest.ServeOn(t, ip, func(c net.Conn) { _, _ = io.Copy(c, c) })
}

// dialCensor connects to the censor at addr once it listens.
func dialCensor(t *testing.T, addr string, stderr *lockedBuffer) net.Conn {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial the censor: %v; stderr: %s", err, stderr.String())
		}
	}
}

// TestBlockAndForwards runs one censor with two forwards under ip-block
// with --block: the relay's own address is null-routed (connecting times
// out, no RST), a second address that forwards to it is not.
func TestBlockAndForwards(t *testing.T) {
	relay := echoServer(t, "127.0.0.2")
	proxy := echoServer(t, "127.0.0.3") // stands for a reverse proxy in front of the relay
	direct, viaProxy := freeAddr(t, "127.0.0.1"), freeAddr(t, "127.0.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--policy", "ip-block", "--block", "127.0.0.2",
			"--forward", direct + "=" + relay, "--forward", viaProxy + "=" + proxy}, &stdout, &stderr)
	}()
	for deadline := time.Now().Add(10 * time.Second); strings.Count(stderr.String(), "listening on") < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the censor did not announce both forwards: %s", stderr.String())
		}
	}
	c := dialCensor(t, viaProxy, &stderr)
	if _, err := c.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("through the second address: %q, %v", line, err)
	}
	c.Close()
	start := time.Now()
	c, err := net.DialTimeout("tcp", direct, 500*time.Millisecond)
	var ne net.Error
	if err == nil {
		c.Close()
		t.Fatal("connected to the null-routed relay")
	}
	if !errors.As(err, &ne) || !ne.Timeout() || time.Since(start) < 400*time.Millisecond {
		t.Errorf("dial the null-routed relay: %v after %v, want a timeout", err, time.Since(start))
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d; stderr: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), `"action":"null-route"`) || !strings.Contains(stdout.String(), "127.0.0.2") {
		t.Errorf("log lacks the null route:\n%s", stdout.String())
	}
	if n := strings.Count(stderr.String(), "listening on"); n != 2 {
		t.Errorf("stderr: %d listeners announced, want 2:\n%s", n, stderr.String())
	}
}
