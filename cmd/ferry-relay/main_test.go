package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/wire"
)

// The ferry-relay binary is built once per test binary run, into
// binDir, which TestMain removes.
var (
	binDir    string
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildRelay builds the ferry-relay binary once per test binary run and
// returns its path.
func buildRelay(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		}
		if binDir, buildErr = os.MkdirTemp("", "ferry-relay-test-"); buildErr != nil {
			return
		}
		builtBin = filepath.Join(binDir, "ferry-relay")
		out, err := exec.Command(goBin, "build", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// relayProc is a running ferry-relay.
type relayProc struct {
	cmd    *exec.Cmd
	link   link.Relay
	stderr *lockedWriter
	exited chan error
}

// startRelay runs bin with args and waits for the link on stdout.
func startRelay(t testing.TB, bin string, args ...string) *relayProc {
	t.Helper()
	return startRelayIn(t, "", bin, args...)
}

// startRelayIn is startRelay in working directory dir.
func startRelayIn(t testing.TB, dir, bin string, args ...string) *relayProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	// The relay dies with the test binary, even if the test panics.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &relayProc{cmd: cmd, stderr: &lockedWriter{}, exited: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
		p.exited <- nil
	})
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case l, ok := <-line:
		if !ok {
			t.Fatalf("ferry-relay printed no link; stderr:\n%s", p.stderr)
		}
		r, err := link.ParseRelay(l)
		if err != nil {
			t.Fatalf("ferry-relay printed %q: %v", l, err)
		}
		p.link = r
	case <-time.After(30 * time.Second):
		t.Fatalf("ferry-relay printed no link within 30s; stderr:\n%s", p.stderr)
	}
	return p
}

// lockedWriter collects the relay's stderr while the test reads it.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// peer is a device connected to the relay over TCP.
type peer struct {
	t  *testing.T
	ch *channel.Conn
}

func connect(t *testing.T, r link.Relay, key channel.KeyPair) *peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", r.Endpoints[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := channel.Client(ctx, nc, key, r.Key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	return &peer{t: t, ch: ch}
}

func (p *peer) send(m wire.Message) {
	p.t.Helper()
	f, err := wire.NewFrame(m)
	if err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.ch.Send(ctx, f); err != nil {
		p.t.Fatal(err)
	}
}

func (p *peer) recv() wire.Message {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := p.ch.Recv(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	m, err := wire.Decode(f)
	if err != nil {
		p.t.Fatal(err)
	}
	return m
}

func expectMsg[T wire.Message](p *peer) T {
	p.t.Helper()
	m := p.recv()
	v, ok := m.(T)
	if !ok {
		var want T
		p.t.Fatalf("got %T %+v, want %T", m, m, want)
	}
	return v
}

func mustKeyPair(t testing.TB) channel.KeyPair {
	t.Helper()
	k, err := channel.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestBinaryEndToEnd runs the built relay: link output, delivery over TCP,
// kill -9 after a SendOK and a restart that still delivers, the link
// subcommand, metrics and a graceful stop.
func TestBinaryEndToEnd(t *testing.T) {
	bin := buildRelay(t)
	data := filepath.Join(t.TempDir(), "data")
	args := []string{"--data", data, "--listen", "tcp=127.0.0.1:0", "--metrics", "127.0.0.1:0", "--log-level", "debug",
		"--disk-mib", "4096", "--disk-reserve-mib", "1024"}
	r := startRelay(t, bin, args...)

	fi, err := os.Stat(filepath.Join(data, "relay.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("relay.key has mode %v, want 0600", fi.Mode().Perm())
	}
	out, err := exec.Command(bin, "link", "--data", data).Output()
	if err != nil {
		t.Fatalf("ferry-relay link: %v", err)
	}
	if got := strings.TrimSuffix(string(out), "\n"); got != r.link.String() || strings.Count(string(out), "\n") != 1 {
		t.Fatalf("ferry-relay link printed %q, want %q alone on one line", out, r.link.String())
	}

	bobKey := mustKeyPair(t)
	tok := sha256.Sum256([]byte("bob's token"))
	bobMailbox := channel.MailboxID(bobKey.Public)
	bob := connect(t, r.link, bobKey)
	bob.send(wire.SetToken{ReqID: 1, Token: tok})
	expectMsg[wire.OK](bob)
	bob.send(wire.Subscribe{ReqID: 2})
	expectMsg[wire.OK](bob)

	anon := connect(t, r.link, mustKeyPair(t))
	anon.send(wire.Send{ID: [16]byte{1}, To: bobMailbox, Token: tok, Envelope: []byte("first")})
	expectMsg[wire.SendOK](anon)
	d := expectMsg[wire.Deliver](bob)
	if string(d.Envelope) != "first" {
		t.Fatalf("bob got %q, want %q", d.Envelope, "first")
	}
	bob.send(wire.Ack{Seqs: []uint64{d.Seq}})
	bob.send(wire.Ping{Nonce: 1})
	expectMsg[wire.Pong](bob)
	bob.ch.Close()

	// Metrics are served.
	metricsAddr := ""
	for _, line := range strings.Split(r.stderr.String(), "\n") {
		if strings.Contains(line, "serving metrics") {
			metricsAddr = strings.TrimPrefix(line[strings.Index(line, "addr="):], "addr=")
		}
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("metrics at %q: %v", metricsAddr, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `ferry_relay_sends_total{result="stored"} 1`) || !strings.Contains(string(body), "ferry_relay_store_batches_total") {
		t.Fatalf("metrics lack the stored send:\n%s", body)
	}
	// The disk flags set the budgets (the reserve is at most an eighth of
	// the bytes budget).
	for _, want := range []string{`ferry_relay_budget_limit{budget="disk"} 4.294967296e+09`, `ferry_relay_budget_limit{budget="disk_reserve"} 5.36870912e+08`} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("metrics lack %s:\n%s", want, body)
		}
	}

	// An acknowledged send survives kill -9.
	anon.send(wire.Send{ID: [16]byte{2}, To: bobMailbox, Token: tok, Envelope: []byte("survivor")})
	expectMsg[wire.SendOK](anon)
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-r.exited
	r.exited <- nil

	r2 := startRelay(t, bin, args...)
	if r2.link.Key != r.link.Key {
		t.Fatal("the relay key changed across a restart")
	}
	bob = connect(t, r2.link, bobKey)
	bob.send(wire.Subscribe{ReqID: 3})
	if d := expectMsg[wire.Deliver](bob); string(d.Envelope) != "survivor" || d.ID != ([16]byte{2}) {
		t.Fatalf("after kill -9 and restart bob got %q (id %x), want the acknowledged %q", d.Envelope, d.ID, "survivor")
	}
	expectMsg[wire.OK](bob) // after the pending envelopes

	// The debug log holds no key or token.
	keyText, err := os.ReadFile(filepath.Join(data, "relay.key"))
	if err != nil {
		t.Fatal(err)
	}
	logs := r.stderr.String() + r2.stderr.String()
	for name, secret := range map[string]string{
		"relay private key": strings.TrimSpace(string(keyText)),
		"delivery token":    base64.RawURLEncoding.EncodeToString(tok[:]),
		"token (hex)":       hex.EncodeToString(tok[:]),
		"device key":        base64.RawURLEncoding.EncodeToString(bobKey.Public[:]),
		"device key (hex)":  hex.EncodeToString(bobKey.Public[:]),
	} {
		if strings.Contains(logs, secret) {
			t.Errorf("the relay's log contains the %s", name)
		}
	}
	if !strings.Contains(logs, "connection open") {
		t.Fatalf("the debug log lacks connection events; the check above is vacuous:\n%s", logs)
	}

	// SIGTERM stops it cleanly.
	if err := r2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r2.exited:
		r2.exited <- nil
		if err != nil {
			t.Fatalf("ferry-relay after SIGTERM: %v; stderr:\n%s", err, r2.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ferry-relay did not stop within 20s of SIGTERM")
	}
	if !strings.Contains(r2.stderr.String(), "stopped") {
		t.Fatalf("no graceful stop in the log:\n%s", r2.stderr)
	}
}

// TestDefaultDataDir runs the relay without --data: its state goes to
// ./ferry-data, and "ferry-relay link" run there finds it.
func TestDefaultDataDir(t *testing.T) {
	bin := buildRelay(t)
	dir := t.TempDir()
	r := startRelayIn(t, dir, bin, "--listen", "tcp=127.0.0.1:0")
	for _, f := range []string{"relay.key", "relay.db", "endpoints"} {
		if _, err := os.Stat(filepath.Join(dir, "ferry-data", f)); err != nil {
			t.Fatalf("no %s in ./ferry-data: %v", f, err)
		}
	}
	cmd := exec.Command(bin, "link")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ferry-relay link: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != r.link.String() {
		t.Fatalf("ferry-relay link printed %q, want %q", got, r.link.String())
	}
}

// TestDefaultListen: a relay started without --listen offers every
// transport it has, on loopback only.
func TestDefaultListen(t *testing.T) {
	known := serverTransports()
	l := listenList{known: known}
	for _, v := range defaultListen {
		if err := l.Set(v); err != nil {
			t.Fatalf("default %q: %v", v, err)
		}
	}
	for _, tr := range known {
		i := slices.IndexFunc(l.specs, func(s listenSpec) bool { return s.transport == tr.name })
		if i < 0 {
			t.Errorf("the default listens on no %s endpoint", tr.name)
			continue
		}
		ap, err := netip.ParseAddrPort(l.specs[i].addr)
		if err != nil || !ap.Addr().IsLoopback() {
			t.Errorf("default %s address %q is not a loopback address", tr.name, l.specs[i].addr)
		}
	}
}

func TestBadUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown transport", []string{"--data", dir, "--listen", "carrier-pigeon=1.2.3.4:5"}, "unknown transport"},
		{"no port", []string{"--data", dir, "--listen", "tcp=127.0.0.1"}, "missing port"},
		{"twice", []string{"--data", dir, "--listen", "tcp=127.0.0.1:0", "--listen", "tcp=127.0.0.1:1"}, "given twice"},
		{"log level", []string{"--data", dir, "--log-level", "loud"}, "--log-level"},
		{"stray argument", []string{"--data", dir, "serve"}, "unexpected argument"},
		{"link without a relay", []string{"link", "--wait", "0", "--data", filepath.Join(dir, "none")}, "no ferry-relay is running with --data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			err := run(context.Background(), tt.args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error()+stderr.String(), tt.want) {
				t.Fatalf("run(%q) = %v (stderr %q), want an error saying %q", tt.args, err, stderr.String(), tt.want)
			}
			if stdout.Len() != 0 {
				t.Fatalf("run(%q) printed %q on stdout", tt.args, stdout.String())
			}
		})
	}
}

func TestKeyReadableByOthersRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := loadOrCreateKey(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, keyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadKey(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("loadKey of a world-readable key = %v, want a refusal", err)
	}
}

// TestBinaryKill9UnderLoad kills the relay with SIGKILL twice while a
// sender pipelines messages, restarting it each time. The sender resends
// whatever has no SendOK yet, with the same ids, on a new connection.
// Afterwards the receiver gets every message, each id stored once (one
// seq per id), and the first delivery of each in the order sent.
func TestBinaryKill9UnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the relay; skipped with -short")
	}
	bin := buildRelay(t)
	data := filepath.Join(t.TempDir(), "data")
	args := []string{"--data", data, "--listen", "tcp=127.0.0.1:0"}
	r := startRelay(t, bin, args...)

	recvKey := mustKeyPair(t)
	tok := sha256.Sum256([]byte("receiver token"))
	mb := channel.MailboxID(recvKey.Public)
	recv := connect(t, r.link, recvKey)
	recv.send(wire.SetToken{ReqID: 1, Token: tok})
	expectMsg[wire.OK](recv)
	recv.ch.Close()

	const n = 600
	msgID := func(i int) [16]byte { return [16]byte{'k', byte(i >> 8), byte(i)} }
	var (
		mu   sync.Mutex
		cur  = r
		oks  = make([]bool, n)
		done int
	)
	current := func() *relayProc { mu.Lock(); defer mu.Unlock(); return cur }
	okCount := func() int { mu.Lock(); defer mu.Unlock(); return done }

	// The sender: one connection at a time, up to 32 Sends in flight,
	// everything without a SendOK resent after a failure.
	senderDone := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(2 * time.Minute)
		for okCount() < n {
			if time.Now().After(deadline) {
				senderDone <- fmt.Errorf("only %d of %d messages acknowledged in 2 minutes", okCount(), n)
				return
			}
			trySend(current().link, tok, mb, msgID, &mu, oks, &done)
		}
		senderDone <- nil
	}()

	for kill := 0; kill < 2; kill++ {
		for okCount() < (kill+1)*n/3 {
			time.Sleep(2 * time.Millisecond)
		}
		p := current()
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
		p.exited <- nil
		next := startRelay(t, bin, args...)
		mu.Lock()
		cur = next
		mu.Unlock()
	}
	if err := <-senderDone; err != nil {
		t.Fatal(err)
	}

	recv = connect(t, current().link, recvKey)
	recv.send(wire.Subscribe{ReqID: 2}) // its OK follows the n envelopes
	seqOf := map[[16]byte]uint64{}
	next := 0
	for next < n {
		d := expectMsg[wire.Deliver](recv)
		if s, ok := seqOf[d.ID]; ok {
			if s != d.Seq {
				t.Fatalf("id %x stored twice, as seq %d and %d", d.ID, s, d.Seq)
			}
			continue
		}
		seqOf[d.ID] = d.Seq
		if d.ID != msgID(next) {
			t.Fatalf("delivery %d is %x, want %x: order broken", next, d.ID, msgID(next))
		}
		next++
	}
}

// trySend connects to the relay and sends every message without a SendOK,
// pipelined, until they are all acknowledged or the connection fails.
func trySend(r link.Relay, tok [32]byte, mb [16]byte, msgID func(int) [16]byte, mu *sync.Mutex, oks []bool, done *int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", r.Endpoints[0].Addr)
	if err != nil {
		time.Sleep(20 * time.Millisecond)
		return
	}
	key, err := channel.GenerateKeyPair(rand.Reader)
	if err != nil {
		return
	}
	ch, err := channel.Client(ctx, nc, key, r.Key)
	if err != nil {
		return
	}
	var todo []int
	mu.Lock()
	for i, ok := range oks {
		if !ok {
			todo = append(todo, i)
		}
	}
	mu.Unlock()
	index := map[[16]byte]int{}
	for _, i := range todo {
		index[msgID(i)] = i
	}
	slots := make(chan struct{}, 32)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	defer ch.Close()
	wg.Go(func() {
		for _, i := range todo {
			select {
			case slots <- struct{}{}:
			case <-stop:
				return
			}
			f, _ := wire.NewFrame(wire.Send{ID: msgID(i), To: mb, Token: tok, Envelope: []byte(fmt.Sprintf("message %d", i))})
			if ch.Send(ctx, f) != nil {
				return
			}
		}
	})
	for range todo {
		f, err := ch.Recv(ctx)
		if err != nil {
			return
		}
		<-slots
		m, err := wire.Decode(f)
		if err != nil {
			return
		}
		ok, isOK := m.(wire.SendOK)
		if !isOK {
			return
		}
		mu.Lock()
		if i, known := index[ok.ID]; known && !oks[i] {
			oks[i] = true
			*done++
		}
		mu.Unlock()
	}
}

// TestPublicAddress: --public replaces the listening address of its
// transport in the link, and "ferry-relay link" prints the same link.
func TestPublicAddress(t *testing.T) {
	bin := buildRelay(t)
	dir := t.TempDir()
	r := startRelay(t, bin, "--data", dir, "--listen", "tcp=127.0.0.1:0", "--public", "tcp=relay.example.org:7443")
	want := []link.Endpoint{{Transport: "tcp", Addr: "relay.example.org:7443"}}
	if !slices.EqualFunc(r.link.Endpoints, want, link.Endpoint.Equal) {
		t.Fatalf("link endpoints %v, want %v", r.link.Endpoints, want)
	}
	out, err := exec.Command(bin, "link", "--data", dir).Output()
	if err != nil {
		t.Fatalf("ferry-relay link: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != r.link.String() {
		t.Fatalf("ferry-relay link printed %q, want %q", got, r.link.String())
	}
}
