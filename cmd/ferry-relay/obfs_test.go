package main

import (
	"context"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor"
	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport/obfs"
)

// TestObfsListener runs the built relay with --listen obfs: the link
// carries an obfs endpoint with its key and shape, the key is kept in the
// data directory across restarts, a client completes the channel handshake
// over obfs, and ferry-censor probe finds one reaction for every replay and
// random probe (no bytes back, still open after its wait) and no read
// limit.
func TestObfsListener(t *testing.T) {
	bin := buildRelay(t)
	dir := t.TempDir()
	args := []string{"--data", dir, "--listen", "tcp=127.0.0.1:0", "--listen", "obfs=127.0.0.1:0"}
	r := startRelay(t, bin, args...)
	ep := obfsEndpoint(t, r.link)
	fi, err := os.Stat(filepath.Join(dir, obfsKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("obfs key file: %v, mode %v; want mode 0600", err, fi.Mode().Perm())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec := &firstWrite{}
	nc, err := obfs.New(obfs.Config{NetDialer: rec}).DialContext(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := channel.Client(ctx, nc, mustKeyPair(t), r.link.Key)
	if err != nil {
		t.Fatalf("channel handshake over obfs: %v", err)
	}
	ch.Close()

	probeWithBinary(t, ep.Addr, rec.get())

	r.cmd.Process.Kill()
	<-r.exited
	r.exited <- nil
	again := obfsEndpoint(t, startRelay(t, bin, args...).link)
	if k1, _ := ep.Param(obfs.ParamKey); !paramIs(again, obfs.ParamKey, k1) {
		t.Fatalf("obfs key changed across a restart: %s, then %s", ep, again)
	}
}

func obfsEndpoint(t *testing.T, r link.Relay) link.Endpoint {
	t.Helper()
	for _, e := range r.Endpoints {
		if e.Transport == obfs.Name {
			if !paramPresent(e, obfs.ParamKey) || !paramPresent(e, obfs.ParamShape) {
				t.Fatalf("obfs endpoint %s lacks key or fet", e)
			}
			return e
		}
	}
	t.Fatalf("link %s has no obfs endpoint", r)
	return link.Endpoint{}
}

func paramPresent(e link.Endpoint, k string) bool { _, ok := e.Param(k); return ok }

func paramIs(e link.Endpoint, k, v string) bool { got, ok := e.Param(k); return ok && got == v }

// firstWrite is a NetDialer that keeps the first bytes written on its
// conns: a real first packet, for the prober's replays.
type firstWrite struct {
	mu    sync.Mutex
	first []byte
}

func (f *firstWrite) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &firstWriteConn{Conn: c, f: f}, nil
}

func (f *firstWrite) get() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.first
}

type firstWriteConn struct {
	net.Conn
	f *firstWrite
}

func (c *firstWriteConn) Write(p []byte) (int, error) {
	c.f.mu.Lock()
	if c.f.first == nil {
		c.f.first = append([]byte(nil), p...)
	}
	c.f.mu.Unlock()
	return c.Conn.Write(p)
}

// probeWithBinary runs ferry-censor probe against addr with first as the
// replays' material, and checks that every probe met one reaction.
func probeWithBinary(t *testing.T, addr string, first []byte) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "ferry-censor")
	if out, err := exec.Command(goBin, "build", "-o", bin, "../ferry-censor").CombinedOutput(); err != nil {
		t.Fatalf("build ferry-censor: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "probe", "--first", hex.EncodeToString(first), "--read-timeout", "2s",
		"--soon", "1ms", "--concurrency", "32", "--read-limit", "4096", addr).Output()
	if err != nil {
		t.Fatalf("ferry-censor probe: %v\n%s", err, out)
	}
	rows := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[0], "replay") && !strings.HasPrefix(f[0], "random-") {
			continue
		}
		rows++
		if f[2] != "0" || f[3] != censor.CloseOpen {
			t.Errorf("probe %s: %s bytes back, %s; want 0, open", f[0], f[2], f[3])
		}
	}
	if rows < 20 || !strings.Contains(string(out), "read limit: still open after 4096 random bytes") {
		t.Fatalf("ferry-censor probe printed %d probe rows, or a read limit:\n%s", rows, out)
	}
}
