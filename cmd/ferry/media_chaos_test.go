package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// mediaScale is the size of TestE2EMediaChaos: small in CI;
// FERRY_MEDIA_FULL=1 runs the sizes (a 1 GB file and a 20 MB
// video) at FERRY_MEDIA_RATE bit/s (default 100 Mbit/s: at the censor's
// usual 140 kbit/s 1 GB would take 16 hours).
func mediaScale() (big, video int, rateBPS float64) {
	big, video, rateBPS = 6<<20, 2<<20, 8e6
	if os.Getenv("FERRY_MEDIA_FULL") != "" {
		big, video, rateBPS = 1<<30, 20<<20, 100e6
	}
	if r, err := strconv.ParseFloat(os.Getenv("FERRY_MEDIA_RATE"), 64); err == nil && r > 0 {
		rateBPS = r
	}
	return
}

// TestE2EMediaChaos sends a large random file and a video-like file from
// bob to alice through ferry-censor playing a throttle and intermittent
// outages at once, kills the relay with SIGKILL twice and bob's ferry
// send once, mid-upload, and checks that both files arrive
// byte-identical and that the relay never stored a byte twice: its
// metrics count no duplicate bytes in any of its lives.
func TestE2EMediaChaos(t *testing.T) {
	t.Parallel()
	bigSize, videoSize, rate := mediaScale()
	censor := censorBinary(t)
	dir := t.TempDir()
	relayAddr, censorAddr, metricsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	_, relayBin := binaries(t)
	r := &relayProc{t: t, bin: relayBin, data: filepath.Join(dir, "relay"), addr: relayAddr,
		extra: []string{"--public", "tcp=" + censorAddr, "--metrics", metricsAddr}}
	r.start()
	t.Cleanup(r.stop)
	out, err := exec.Command(relayBin, "link", "--data", r.data).Output()
	if err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(dir, "policy.json")
	os.WriteFile(policy, []byte(fmt.Sprintf(`{"name": "throttle-intermittent", "description": "test", "rules": [
		{"name": "throttle", "throttle": {"rate_bps": %.0f}},
		{"name": "outage", "outage": {"up_min": "2s", "up_max": "5s", "down_min": "300ms", "down_max": "1s", "new": "reset", "existing": "reset"}}]}`, rate)), 0o644)
	startProcess(t, false, censor, "--policy", policy, "--seed", "7", "--log", filepath.Join(dir, "censor.jsonl"),
		"--forward", censorAddr+"="+relayAddr)
	waitListening(t, censorAddr)
	link := strings.TrimSpace(string(out))
	alice, bob := newLinkUser(t, link, "alice"), newLinkUser(t, link, "bob")
	eventually(t, func() bool { _, _, code := alice.run("", "read"); return code == 0 })
	connectRetrying(t, alice, bob)
	alice.must("set", "auto-download", "2GB")

	big, video := randomFile(t, dir, "big.bin", bigSize), randomFile(t, dir, "video.mp4", videoSize)
	m := &relayMetrics{addr: metricsAddr}
	m.watch(t)
	send := exec.Command(bob.bin, "--home", bob.home, "send", "alice", "--file", big)
	send.Env = filterEnv(os.Environ(), "FERRY_PASSPHRASE")
	if err := send.Start(); err != nil {
		t.Fatal(err)
	}
	sendDone := make(chan struct{})
	go func() { send.Wait(); close(sendDone) }()
	stored := func() int64 { return blobBytes(r.data) }
	for i, frac := range []float64{0.2, 0.4} {
		waitUntil(t, sendDone, func() bool { return float64(stored()) >= frac*float64(bigSize) }, "the upload to pass "+strconv.Itoa(int(frac*100))+"%")
		m.kill(r)
		t.Logf("relay killed (%d) at %d of %d bytes", i+1, stored(), bigSize)
		time.Sleep(300 * time.Millisecond)
		r.start()
	}
	waitUntil(t, sendDone, func() bool { return float64(stored()) >= 0.6*float64(bigSize) }, "the upload to pass 60%")
	send.Process.Kill()
	<-sendDone
	t.Logf("bob's ferry send killed at %d of %d bytes", stored(), bigSize)
	// Later commands resume the upload from where the relay is.
	eventually(t, func() bool {
		return sentAll(bob)
	})
	// The video: one ferry send (exit 3 keeps it queued), then reads.
	bob.run("", "send", "alice", "--file", video)
	eventually(t, func() bool { return sentAll(bob) })

	var got []jsonMessage
	eventually(t, func() bool {
		got = got[:0]
		ms, _ := tryReadJSON(alice, "--all")
		done := 0
		for _, msg := range ms {
			if msg.Attachment != nil {
				got = append(got, msg)
				if msg.Attachment.Transfer == "done" {
					done++
				}
			}
		}
		return len(got) == 2 && done == 2
	})
	for i, want := range []string{big, video} {
		a := got[i].Attachment
		wantData, _ := os.ReadFile(want)
		sum := sha256.Sum256(wantData)
		gotData, err := os.ReadFile(a.Path)
		if err != nil || !bytes.Equal(gotData, wantData) || a.SHA256 != hex.EncodeToString(sum[:]) {
			t.Fatalf("%s arrived as %s: %v, identical %v", filepath.Base(want), a.Path, err, bytes.Equal(gotData, wantData))
		}
	}
	m.stop()
	dup, stored2 := m.totals()
	t.Logf("relay lives: %d; bytes stored %.0f (scraped before each kill), duplicates %.0f", len(m.lives), stored2, dup)
	if dup != 0 {
		t.Fatalf("the relay stored %.0f bytes twice", dup)
	}
	// Every blob byte once: what the scrapes saw is at most the blobs'
	// sizes (a piece stored between the last scrape and a kill is not
	// seen).
	if total := blobBytes(r.data); stored2 > float64(total) {
		t.Fatalf("the relay counted %.0f bytes stored for blobs of %d", stored2, total)
	}
}

// eventually retries f, once a second (the relay limits subscriptions
// to 2 a second), for up to two minutes (twenty at full size).
func eventually(t *testing.T, f func() bool) {
	t.Helper()
	patience := 2 * time.Minute
	if os.Getenv("FERRY_MEDIA_FULL") != "" {
		patience = 20 * time.Minute
	}
	for deadline := time.Now().Add(patience); !f(); time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v", patience)
		}
	}
}

// sentAll runs ferry read for u (which delivers its outbox) and reports
// whether none of its messages is still queued.
func sentAll(u *user) bool {
	u.run("", "read")
	ms, _ := tryReadJSON(u, "--all")
	for _, m := range ms {
		if m.Outgoing && (m.State == "queued" || m.Attachment != nil && m.Attachment.Transfer != "done") {
			return false
		}
	}
	return len(ms) > 0
}

// tryReadJSON is readJSON through a flaky path: ok is false if ferry read
// failed (the messages it printed count all the same).
func tryReadJSON(u *user, extra ...string) ([]jsonMessage, bool) {
	out, _, code := u.run("", append([]string{"read", "--json"}, extra...)...)
	var ms []jsonMessage
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m jsonMessage
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			ms = append(ms, m)
		}
	}
	return ms, code == 0
}

// waitUntil waits for cond, failing if done closes first.
func waitUntil(t *testing.T, done <-chan struct{}, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
		select {
		case <-done:
			t.Fatalf("ferry send ended before %s", what)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// connectRetrying is connect through a flaky path.
func connectRetrying(t *testing.T, a, b *user) {
	t.Helper()
	var inv string
	eventually(t, func() bool {
		out, _, code := a.run("", "invite")
		inv = strings.TrimSpace(out)
		return code == 0
	})
	eventually(t, func() bool { _, _, code := b.run("", "add", "--wait", "0", inv); return code == 0 })
	eventually(t, func() bool {
		a.run("", "read")
		out, _, _ := a.run("", "contacts")
		return strings.TrimSpace(out) == b.name
	})
}

func randomFile(t *testing.T, dir, name string, n int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for left := n; left > 0; left -= len(buf) {
		rand.Read(buf)
		f.Write(buf[:min(left, len(buf))])
	}
	return p
}

// blobBytes is how many bytes the relay's blob store holds on disk.
func blobBytes(data string) int64 {
	var n int64
	filepath.Walk(filepath.Join(data, "blobs"), func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(p, ".data") {
			n += info.Size()
		}
		return nil
	})
	return n
}

// relayMetrics scrapes the relay's blob counters every 50 ms, keeping the
// last values of each of its lives (a kill ends one).
type relayMetrics struct {
	addr  string
	mu    sync.Mutex
	lives []map[string]float64
	quit  chan struct{}
	wg    sync.WaitGroup
}

func (m *relayMetrics) watch(t *testing.T) {
	m.quit = make(chan struct{})
	m.lives = []map[string]float64{{}}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			select {
			case <-m.quit:
				return
			case <-time.After(50 * time.Millisecond):
			}
			m.scrape()
		}
	}()
	t.Cleanup(m.stop)
}

func (m *relayMetrics) scrape() {
	resp, err := http.Get("http://" + m.addr + "/metrics")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	vals := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "ferry_relay_blob_put_bytes_total") {
			continue
		}
		name, v, _ := strings.Cut(line, " ")
		f, _ := strconv.ParseFloat(v, 64)
		vals[name] = f
	}
	m.mu.Lock()
	m.lives[len(m.lives)-1] = vals
	m.mu.Unlock()
}

// kill scrapes once more, kills the relay and starts a new life.
func (m *relayMetrics) kill(r *relayProc) {
	m.scrape()
	r.kill()
	m.mu.Lock()
	m.lives = append(m.lives, map[string]float64{})
	m.mu.Unlock()
}

func (m *relayMetrics) stop() {
	select {
	case <-m.quit:
	default:
		close(m.quit)
	}
	m.wg.Wait()
	m.scrape()
}

// totals sums the duplicate and stored bytes over the relay's lives.
func (m *relayMetrics) totals() (dup, stored float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.lives {
		dup += l[`ferry_relay_blob_put_bytes_total{result="duplicate"}`]
		stored += l[`ferry_relay_blob_put_bytes_total{result="stored"}`]
	}
	return dup, stored
}
