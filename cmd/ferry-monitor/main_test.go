package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/monitor/ranking"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/relaytest"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/tcp"
)

var bin string // the built ferry-monitor

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-monitor-bin")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "ferry-monitor")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build ferry-monitor: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// monitorCmd runs ferry-monitor with args and returns its exit status,
// standard output and standard error.
func monitorCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

func jsonStatus(t *testing.T, data string) []monitor.Assessment {
	t.Helper()
	code, out, errOut := monitorCmd(t, "status", "--data", data, "--json")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	var cells []monitor.Assessment
	if err := json.Unmarshal([]byte(out), &cells); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return cells
}

func TestRunStatusReport(t *testing.T) {
	r := relaytest.Start(t, nil)
	ref := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(make([]byte, 64<<10)) }))
	ref.Config.ErrorLog = log.New(io.Discard, "", 0) // the controls' hellos never finish their handshakes
	ref.StartTLS()
	defer ref.Close()
	data := t.TempDir()
	code, _, errOut := monitorCmd(t, "run", "--data", data, "--link", r.Link.String(), "--vantage", "lab",
		"--interval", "300ms", "--for", "2500ms", "--control", ref.URL+"/page")
	if code != 0 {
		t.Fatalf("run: exit %d: %s", code, errOut)
	}
	cells := jsonStatus(t, data)
	if len(cells) != 1 {
		t.Fatalf("%d cells, want 1", len(cells))
	}
	c := cells[0]
	if c.Vantage != "lab" || c.Transport != "tcp" || c.Feature != "text" || c.State != monitor.StateOK || c.Since.IsZero() || c.Confidence <= 0 {
		t.Errorf("cell %+v", c)
	}
	raw, _ := exec.Command(bin, "status", "--data", data, "--json").Output()
	for _, k := range []string{`"relay"`, `"transport"`, `"feature"`, `"state"`, `"mechanism"`, `"since"`, `"confidence"`} {
		if !bytes.Contains(raw, []byte(k)) {
			t.Errorf("status --json lacks %s", k)
		}
	}
	if _, out, _ := monitorCmd(t, "status", "--data", data); !strings.Contains(out, "ok") || !strings.Contains(out, "tcp") {
		t.Errorf("status:\n%s", out)
	}
	checkMeasurements(t, filepath.Join(data, "measurements.jsonl"))
	prefix := filepath.Join(t.TempDir(), "rep")
	if code, _, errOut := monitorCmd(t, "report", "--data", data, "--out", prefix); code != 0 {
		t.Fatalf("report: exit %d: %s", code, errOut)
	}
	for _, ext := range []string{".html", ".csv"} {
		if fi, err := os.Stat(prefix + ext); err != nil || fi.Size() == 0 {
			t.Errorf("report%s: %v", ext, err)
		}
	}
}

// checkMeasurements checks the OONI lines: one per trial, each with its
// two controls passing.
func checkMeasurements(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m monitor.OONIMeasurement
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("measurement %d: %v", n, err)
		}
		if m.TestName != "ferry_reachability" || len(m.TestKeys.Controls) != 2 || m.TestKeys.Controls[0].Failure != nil {
			t.Fatalf("measurement %d: %+v", n, m)
		}
		n++
	}
	if n < 3 {
		t.Fatalf("%d measurements, want at least 3", n)
	}
}

func TestBadInput(t *testing.T) {
	data := t.TempDir()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, exitUsage, "usage"},
		{"unknown command", []string{"watch"}, exitUsage, "unknown command"},
		{"no link", []string{"run", "--data", data}, exitError, "--link"},
		{"wrong link", []string{"run", "--data", data, "--link", "ferry://relay?v=1&k=short"}, exitError, "not a relay link"},
		{"unknown transports", []string{"run", "--data", data, "--link", "ferry://relay?v=1&k=QVrmxW8vUOwHo6QssYVgV9Q3fek1zJL9OGuIdacuIBo&quic=127.0.0.1:1"}, exitError, "none of the links' transports"},
		{"no history", []string{"status", "--data", filepath.Join(data, "nothing")}, exitError, "no monitor history"},
		{"stray argument", []string{"status", "--data", data, "extra"}, exitUsage, "unexpected argument"},
		{"bad proxy", []string{"run", "--data", data, "--link", "ferry://relay?v=1&k=QVrmxW8vUOwHo6QssYVgV9Q3fek1zJL9OGuIdacuIBo&tcp=127.0.0.1:1", "--proxy", "gopher://x"}, exitError, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := monitorCmd(t, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errOut, tt.code, tt.want)
			}
			if tt.code == exitError && strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
				t.Errorf("want one sentence, got:\n%s", errOut)
			}
		})
	}
}

func TestUnreachableRelayIsNotBlocked(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nobody listens there now
	data := t.TempDir()
	link := "ferry://relay?v=1&k=QVrmxW8vUOwHo6QssYVgV9Q3fek1zJL9OGuIdacuIBo&tcp=" + addr
	if code, _, errOut := monitorCmd(t, "run", "--data", data, "--link", link, "--interval", "200ms", "--for", "1500ms", "--control", "none"); code != 0 {
		t.Fatalf("run: exit %d: %s", code, errOut)
	}
	cells := jsonStatus(t, data)
	if len(cells) != 1 || cells[0].State != monitor.StateUnknown || !strings.Contains(cells[0].Evidence, "does not answer") {
		t.Fatalf("cells %+v: want unknown, saying the relay does not answer", cells)
	}
}

func TestServeAndWebhook(t *testing.T) {
	r := relaytest.Start(t, nil)
	var mu sync.Mutex
	var events []monitor.WebhookPayload
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var p monitor.WebhookPayload
		json.NewDecoder(req.Body).Decode(&p)
		mu.Lock()
		events = append(events, p)
		mu.Unlock()
	}))
	defer hook.Close()
	data := t.TempDir()
	if code, _, errOut := monitorCmd(t, "run", "--data", data, "--link", r.Link.String(), "--interval", "200ms", "--for", "1s", "--control", "none", "--webhook", hook.URL); code != 0 {
		t.Fatalf("run: exit %d: %s", code, errOut)
	}
	mu.Lock()
	if len(events) == 0 || events[len(events)-1].Event.State != monitor.StateOK {
		t.Errorf("webhook events %+v: want the change to ok", events)
	}
	mu.Unlock()

	cmd := exec.Command(bin, "serve", "--data", data, "--listen", "127.0.0.1:0")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	url, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	url = strings.TrimSpace(url)
	for path, want := range map[string]string{"api/status": `"state": "ok"`, "metrics": `ferry_monitor_state{feature="text"`, "": `data-state="ok"`} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), want) {
			t.Errorf("GET /%s lacks %q", path, want)
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after SIGINT: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("serve did not stop on SIGINT")
	}
}

func TestRankingPublished(t *testing.T) {
	// ranking-key on "the relay's machine" (its relay.key), then a relay
	// that takes rankings from the printed key, then run --ranking-key: a
	// client finds a ranking the relay's key certifies.
	relayDir := t.TempDir()
	key, err := channel.GenerateKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(relayDir, "relay.key"), []byte(base64.RawURLEncoding.EncodeToString(key.Private[:])+"\n"), 0o600)
	keyFile := filepath.Join(t.TempDir(), "ranking.key")
	code, out, errOut := monitorCmd(t, "ranking-key", "--relay-data", relayDir, "--out", keyFile)
	if code != 0 {
		t.Fatalf("ranking-key: exit %d: %s", code, errOut)
	}
	_, pubText, ok := strings.Cut(strings.TrimSpace(out), "--ranking-publisher ")
	pub, err := base64.RawURLEncoding.DecodeString(pubText)
	if !ok || err != nil || len(pub) != 32 {
		t.Fatalf("ranking-key printed %q", out)
	}
	r := relaytest.Start(t, &relay.Config{Key: key, RankingPublishers: [][32]byte{[32]byte(pub)}})
	data := t.TempDir()
	if code, _, errOut := monitorCmd(t, "run", "--data", data, "--link", r.Link.String(), "--interval", "300ms", "--for", "1500ms", "--control", "none", "--ranking-key", keyFile); code != 0 {
		t.Fatalf("run: exit %d: %s", code, errOut)
	}
	reg, _ := transport.NewRegistry(transport.Entry{Name: "tcp", Dialer: tcp.New(tcp.Config{})})
	cn, err := (&relayclient.Dialer{Transports: reg}).Dial(t.Context(), r.Link, key)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	rk, err := cn.GetRanking(t.Context())
	if err != nil || len(rk.Blobs) != 1 {
		t.Fatalf("rankings %+v, %v", rk, err)
	}
	got, err := ranking.Verify(rk.Blobs[0], key.Public, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	es := got.For(rk.Observed)
	if len(es) != 1 || es[0].Transport != "tcp" || es[0].State != ranking.OK {
		t.Fatalf("ranking for %v: %+v", rk.Observed, es)
	}
	if code, _, errOut := monitorCmd(t, "run", "--data", data, "--link", "ferry://relay?v=1&k=QVrmxW8vUOwHo6QssYVgV9Q3fek1zJL9OGuIdacuIBo&tcp=127.0.0.1:1", "--for", "1ms", "--ranking-key", keyFile); code != exitError || !strings.Contains(errOut, "certified by a relay") {
		t.Errorf("a ranking key of another relay: exit %d, %q", code, errOut)
	}
}

func TestRunMedia(t *testing.T) {
	// media_put and media_get cells beside text, shown by status,
	// status --json, the report and the measurements.
	r := relaytest.Start(t, nil)
	ref := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(make([]byte, 64<<10)) }))
	ref.Config.ErrorLog = log.New(io.Discard, "", 0)
	ref.StartTLS()
	defer ref.Close()
	data := t.TempDir()
	code, _, errOut := monitorCmd(t, "run", "--data", data, "--link", r.Link.String(), "--feature", "text",
		"--feature", "media_put", "--feature", "media_get", "--media-size", "50KB", "--media-size", "200KB",
		"--interval", "300ms", "--for", "3s", "--control", ref.URL+"/page")
	if code != 0 {
		t.Fatalf("run: exit %d: %s", code, errOut)
	}
	cells := jsonStatus(t, data)
	got := map[string]monitor.State{}
	for _, c := range cells {
		got[c.Feature] = c.State
	}
	for _, f := range []string{"text", "media_put", "media_get"} {
		if got[f] != monitor.StateOK {
			t.Errorf("%s cell: %q, want ok (cells %+v)", f, got[f], cells)
		}
	}
	if _, out, _ := monitorCmd(t, "status", "--data", data); !strings.Contains(out, "media_put") || !strings.Contains(out, "media_get") {
		t.Errorf("status:\n%s", out)
	}
	prefix := filepath.Join(t.TempDir(), "rep")
	if code, _, errOut := monitorCmd(t, "report", "--data", data, "--out", prefix); code != 0 {
		t.Fatalf("report: exit %d: %s", code, errOut)
	}
	for _, ext := range []string{".html", ".csv"} {
		if b, err := os.ReadFile(prefix + ext); err != nil || !bytes.Contains(b, []byte("media_get")) {
			t.Errorf("report%s lacks the media cells: %v", ext, err)
		}
	}
	b, err := os.ReadFile(filepath.Join(data, "measurements.jsonl"))
	if err != nil || !bytes.Contains(b, []byte(`"steps":[{"name":"register"`)) || !bytes.Contains(b, []byte(`"name":"put 200KB"`)) || !bytes.Contains(b, []byte(`"name":"get 200KB"`)) {
		t.Errorf("measurements lack the media steps: %v", err)
	}
	if code, _, errOut := monitorCmd(t, "run", "--data", data, "--link", r.Link.String(), "--feature", "media_put", "--media-size", "ten"); code != 1 || !strings.Contains(errOut, "100KB") {
		t.Errorf("a bad --media-size: exit %d: %s", code, errOut)
	}
}
