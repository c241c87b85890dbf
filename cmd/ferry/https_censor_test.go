package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor/censortest"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport/https/httpstest"
)

var (
	censorOnce sync.Once
	censorBin  string
	censorErr  error
)

// censorBinary builds ferry-censor once per test run.
func censorBinary(t *testing.T) string {
	t.Helper()
	binaries(t) // makes binDir
	censorOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", binDir, "github.com/ferry-im/ferry/cmd/ferry-censor").CombinedOutput()
		if err != nil {
			censorErr = fmt.Errorf("go build ferry-censor: %v\n%s", err, out)
		}
		censorBin = filepath.Join(binDir, "ferry-censor")
	})
	if censorErr != nil {
		t.Fatal(censorErr)
	}
	return censorBin
}

// censorScenario is one censor policy the https transport must get
// through: directly, or (ip-block) through nginx on another address while
// the relay's own addresses are null-routed.
type censorScenario struct {
	policy   string
	viaNginx bool
}

// TestE2EHTTPSThroughCensor runs the binaries through ferry-censor: for
// each policy, 1,000 messages each way over the https transport arrive
// exactly once and in order, and every https flow passes the censor;
// the same users over tcp (the control) are stopped by it.
func TestE2EHTTPSThroughCensor(t *testing.T) {
	scenarios := []censorScenario{
		{"tls-gate", false}, {"whitelist", false}, {"fet-2021", false}, {"probing", false},
		{"whatsapp-2017-09", false}, {"tls-in-tls", false}, {"ip-block", true},
	}
	for _, sc := range scenarios {
		t.Run(sc.policy, func(t *testing.T) {
			t.Parallel()
			runCensorScenario(t, sc)
		})
	}
}

func runCensorScenario(t *testing.T, sc censorScenario) {
	censor := censorBinary(t)
	_, relayBin := binaries(t)
	relayHTTPS, relayTCP, censorHTTPS, censorTCP := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	dir := t.TempDir()
	args := []string{"--data", filepath.Join(dir, "relay"), "--log-level", "info",
		"--listen", "https=" + relayHTTPS, "--listen", "tcp=" + relayTCP,
		"--public", "https=" + censorHTTPS, "--public", "tcp=" + censorTCP, "--https-sni", "www.example.com"}
	cert := censortest.ExampleComCert(t)
	if sc.viaNginx {
		certFile := filepath.Join(dir, "proxy.crt")
		if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--https-behind-proxy", "--tls-cert", certFile)
	}
	relay, logs := startProcess(t, true, relayBin, args...)
	r, err := link.ParseRelay(relay)
	if err != nil {
		t.Fatalf("relay printed %q: %v", relay, err)
	}
	upstream := relayHTTPS
	cargs := []string{"--policy", sc.policy, "--seed", "1", "--log", filepath.Join(dir, "censor.jsonl")}
	if sc.viaNginx {
		path := regexp.MustCompile(`path=(/\S+)`).FindStringSubmatch(waitFor(t, logs, "https transport"))
		if path == nil {
			t.Fatalf("the relay logged no secret path:\n%s", logs)
		}
		upstream = httpstest.Nginx(t, cert, path[1], relayHTTPS, relayHTTPS)
		cargs = append(cargs, "--block", relayHTTPS, "--block", relayTCP)
	}
	cargs = append(cargs, "--forward", censorHTTPS+"="+upstream, "--forward", censorTCP+"="+relayTCP)
	startProcess(t, false, censor, cargs...)
	waitListening(t, censorHTTPS)

	httpsLink, tcpLink := onlyEndpoint(r, "https"), onlyEndpoint(r, "tcp")
	alice, bob := newLinkUser(t, httpsLink, "Alice"), newLinkUser(t, httpsLink, "Bob")
	connect(t, alice, bob)
	exchange(t, bob, alice, 1000)
	exchange(t, alice, bob, 1000)

	if sc.policy == "tls-in-tls" {
		// The rule looks only inside TLS, so tcp is no control here:
		// transport/https's TestTLSInTLS shows the classifier flagging a
		// plain TLS tunnel with the same opening.
		for _, f := range readCensorLog(t, filepath.Join(dir, "censor.jsonl"), nil) {
			if f.Action != "pass" && f.Action != "" {
				t.Errorf("an https flow was stopped: %s %s: %s", f.Rule, f.Action, f.Evidence)
			}
		}
		return
	}
	delivered := tcpControl(t, tcpLink)
	var poke func()
	if sc.policy == "probing" {
		// The prober blocks the server a while after the suspicious
		// flows; new flows then show the block.
		poke = func() { pokeTCP(censorTCP) }
	}
	flows := readCensorLog(t, filepath.Join(dir, "censor.jsonl"), poke)
	var stopped []string
	for _, f := range flows {
		switch {
		case f.Server == upstream && f.Action != "pass" && f.Action != "":
			t.Errorf("an https flow was stopped: %s %s: %s", f.Rule, f.Action, f.Evidence)
		case f.Server == relayTCP && f.Action != "pass" && f.Action != "":
			stopped = append(stopped, f.Rule+" "+f.Action)
		}
	}
	if len(stopped) == 0 {
		t.Errorf("the tcp control was not stopped by %s (it delivered %d of 20 messages): the test cannot tell the censor works", sc.policy, delivered)
	}
	t.Logf("%s: https passed; tcp control delivered %d of 20, censor verdicts on tcp: %v", sc.policy, delivered, uniq(stopped))
}

// onlyEndpoint is r's link with only its endpoint of transport name.
func onlyEndpoint(r link.Relay, name string) string {
	out := r
	out.Endpoints = nil
	for _, e := range r.Endpoints {
		if e.Transport == name {
			out.Endpoints = append(out.Endpoints, e)
		}
	}
	return out.String()
}

func newLinkUser(t *testing.T, relayLink, name string) *user {
	t.Helper()
	bin, _ := binaries(t)
	u := &user{t: t, bin: bin, home: filepath.Join(t.TempDir(), name), name: name}
	u.must("init", "--relay", relayLink, "--name", name)
	return u
}

// exchange sends n numbered messages from a to b in one ferry send and
// checks that b reads exactly those, once each, in order.
func exchange(t *testing.T, from, to *user, n int) {
	t.Helper()
	var in strings.Builder
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprintf("%s %04d", from.name, i)
		in.WriteString(want[i] + "\n")
	}
	if _, errs, code := from.run(in.String(), "send", "--lines", to.name, "-"); code != 0 {
		t.Fatalf("%s: ferry send: exit %d: %s", from.name, code, errs)
	}
	var got []string
	deadline := time.Now().Add(2 * time.Minute)
	for len(got) < n && time.Now().Before(deadline) {
		ms, _ := to.readJSON("--wait", "10s")
		for _, m := range ms {
			if m.From == from.name && !m.Outgoing {
				got = append(got, m.Text)
			}
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s read %d messages from %s, want the %d sent, once each, in order (first differences: %v)", to.name, len(got), from.name, n, firstDiff(got, want))
	}
}

func firstDiff(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("at %d got %q want %q", i, got[i], want[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(got), len(want))
}

// tcpControl makes two users talk over the tcp link through the censor,
// tolerating failures, and returns how many of 20 messages arrived.
func tcpControl(t *testing.T, tcpLink string) int {
	t.Helper()
	bin, _ := binaries(t)
	carol := &user{t: t, bin: bin, home: filepath.Join(t.TempDir(), "Carol"), name: "Carol"}
	dave := &user{t: t, bin: bin, home: filepath.Join(t.TempDir(), "Dave"), name: "Dave"}
	carol.run("", "init", "--relay", tcpLink, "--name", "Carol")
	dave.run("", "init", "--relay", tcpLink, "--name", "Dave")
	inv, _, code := carol.run("", "invite")
	if code != 0 {
		return 0
	}
	if _, _, code := dave.run("", "add", strings.TrimSpace(inv)); code != 0 {
		return 0
	}
	carol.run("", "read")
	var in strings.Builder
	for i := range 20 {
		fmt.Fprintf(&in, "Dave %04d\n", i)
	}
	dave.run(in.String(), "send", "--lines", "Carol", "-")
	ms, _ := carol.readJSON("--wait", "5s")
	return len(ms)
}

// flowLine is one line of ferry-censor's log.
type flowLine struct {
	Server   string `json:"server"`
	Rule     string `json:"rule"`
	Action   string `json:"action"`
	Evidence string `json:"evidence"`
}

// readCensorLog reads the censor's log. With poke, it calls poke until a
// line shows the prober blocking a server, for up to 60 s.
func readCensorLog(t *testing.T, path string, poke func()) []flowLine {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		var flows []flowLine
		blocked := false
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var f flowLine
			if json.Unmarshal(sc.Bytes(), &f) == nil {
				flows = append(flows, f)
				blocked = blocked || (f.Rule == "probe" && f.Action != "pass")
			}
		}
		if poke == nil || blocked || time.Now().After(deadline) {
			return flows
		}
		poke()
	}
}

// pokeTCP opens a connection to addr that sends a random-looking first
// packet, as the tcp transport does, and closes it after a second.
func pokeTCP(addr string) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		time.Sleep(time.Second)
		return
	}
	defer c.Close()
	b := make([]byte, 98)
	rand.Read(b)
	c.Write(b)
	time.Sleep(time.Second)
}

func uniq(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// startProcess starts bin with args, stops it when the test ends, and
// returns its collected stderr and, if firstLine, the first line of its
// stdout (waiting for it).
func startProcess(t *testing.T, firstLine bool, bin string, args ...string) (string, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := new(syncBuffer)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if !firstLine {
		cmd.Stdout = nil
		go func() { io.Copy(io.Discard, stdout) }()
		return "", logs
	}
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		line := ""
		if sc.Scan() {
			line = sc.Text()
		}
		first <- line
		for sc.Scan() {
		}
	}()
	select {
	case l := <-first:
		return l, logs
	case <-time.After(20 * time.Second):
		t.Fatalf("%s printed nothing in 20 s:\n%s", filepath.Base(bin), logs)
	}
	return "", nil
}

// syncBuffer is a bytes.Buffer safe for a process to write while the
// test reads.
type syncBuffer struct {
	mu sync.Mutex // mu protects b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor returns the first line of logs containing s, waiting up to 10 s.
func waitFor(t *testing.T, logs *syncBuffer, s string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, s) {
				return line
			}
		}
	}
	return ""
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
	}
}
