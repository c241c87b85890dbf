package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor/censortest"
)

// The end-to-end tests build ferry and ferry-relay and run them as a user
// and an operator would: separate processes, a real relay on loopback with
// its embedded SQLite store, profiles in temporary directories.

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds ferry and ferry-relay once per test run.
func binaries(t *testing.T) (ferryBin, relayBin string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "ferry-e2e-bin")
		if buildErr != nil {
			return
		}
		for _, pkg := range []string{"github.com/ferry-im/ferry/cmd/ferry", "github.com/ferry-im/ferry/cmd/ferry-relay"} {
			out, err := exec.Command("go", "build", "-o", binDir, pkg).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "ferry"), filepath.Join(binDir, "ferry-relay")
}

// relayProc is a ferry-relay process that can be killed and restarted on
// the same data directory and port.
type relayProc struct {
	t    *testing.T
	bin  string
	data string
	addr string
	link string
	cmd  *exec.Cmd
	logs bytes.Buffer
	// extra are more arguments for ferry-relay (set before start).
	extra []string
}

// freeAddr returns a loopback address for a process the test starts to
// listen on (censortest.FreeAddr: a port no outgoing connection takes
// meanwhile).
func freeAddr(t *testing.T) string {
	t.Helper()
	return censortest.FreeAddr(t, "127.0.0.1")
}

func startRelay(t *testing.T) *relayProc {
	t.Helper()
	_, relayBin := binaries(t)
	r := &relayProc{t: t, bin: relayBin, data: filepath.Join(t.TempDir(), "relay"), addr: freeAddr(t)}
	r.start()
	out, err := exec.Command(relayBin, "link", "--data", r.data).Output()
	if err != nil {
		t.Fatalf("ferry-relay link: %v", err)
	}
	r.link = strings.TrimSpace(string(out))
	t.Cleanup(r.stop)
	return r
}

func (r *relayProc) start() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, append([]string{"--data", r.data, "--listen", "tcp=" + r.addr, "--log-level", "warn"}, r.extra...)...)
	r.cmd.Stdout, r.cmd.Stderr = &r.logs, &r.logs
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start relay: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("relay did not start listening: %v\n%s", err, r.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops the relay with SIGKILL, as a crash would.
func (r *relayProc) kill() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Kill()
	r.cmd.Wait()
	r.cmd = nil
}

func (r *relayProc) stop() { r.kill() }

// user runs ferry commands against one profile.
type user struct {
	t    *testing.T
	bin  string
	home string
	name string
}

func newUser(t *testing.T, r *relayProc, name string) *user {
	t.Helper()
	bin, _ := binaries(t)
	u := &user{t: t, bin: bin, home: filepath.Join(t.TempDir(), name), name: name}
	u.must("init", "--relay", r.link, "--name", name)
	return u
}

// run runs ferry with args and returns stdout, stderr and the exit status.
func (u *user) run(stdin string, args ...string) (string, string, int) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, u.bin, append([]string{"--home", u.home}, args...)...)
	cmd.Env = filterEnv(os.Environ(), "FERRY_PASSPHRASE")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		u.t.Fatalf("ferry %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func filterEnv(env []string, name string) []string {
	out := env[:0]
	for _, e := range env {
		if !strings.HasPrefix(e, name+"=") {
			out = append(out, e)
		}
	}
	return out
}

func (u *user) must(args ...string) string {
	u.t.Helper()
	out, errs, code := u.run("", args...)
	if code != 0 {
		u.t.Fatalf("%s: ferry %s: exit %d: %s", u.name, strings.Join(args, " "), code, errs)
	}
	return out
}

// readJSON runs ferry read --json (plus extra flags) and parses the lines.
func (u *user) readJSON(extra ...string) ([]jsonMessage, int) {
	u.t.Helper()
	out, errs, code := u.run("", append([]string{"read", "--json"}, extra...)...)
	if code != 0 && code != exitUnreachable {
		u.t.Fatalf("%s: ferry read: exit %d: %s", u.name, code, errs)
	}
	var ms []jsonMessage
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m jsonMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			u.t.Fatalf("%s: ferry read --json printed %q: %v", u.name, sc.Text(), err)
		}
		ms = append(ms, m)
	}
	return ms, code
}

// connect makes a and b contacts: a invites, b adds, a learns of b.
func connect(t *testing.T, a, b *user) {
	t.Helper()
	inv := strings.TrimSpace(a.must("invite"))
	if got := strings.TrimSpace(b.must("add", "--wait", "0", inv)); got != a.name {
		t.Fatalf("ferry add printed %q, want %q", got, a.name)
	}
	a.must("read")
	if got := strings.TrimSpace(a.must("contacts")); got != b.name {
		t.Fatalf("%s's contacts: got %q, want %q", a.name, got, b.name)
	}
}

func TestE2EConversation(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	alice, bob := newUser(t, r, "alice"), newUser(t, r, "bob")
	connect(t, alice, bob)

	bob.must("send", "alice", "hello alice")
	if _, _, code := bob.run("a message\nfrom stdin\n", "send", "alice", "-"); code != 0 {
		t.Fatalf("send from stdin: exit %d", code)
	}
	alice.must("send", "bob", "hello bob")
	got, _ := alice.readJSON()
	if len(got) != 2 || got[0].Text != "hello alice" || got[1].Text != "a message\nfrom stdin" {
		t.Fatalf("alice read %+v", got)
	}
	for _, m := range got {
		if m.From != "bob" || m.To != "alice" || len(m.ID) != 32 || m.Sent == "" {
			t.Fatalf("bad message fields: %+v", m)
		}
	}
	if again, _ := alice.readJSON(); len(again) != 0 {
		t.Fatalf("second read printed %d messages, want 0", len(again))
	}
	got, _ = bob.readJSON()
	if len(got) != 1 || got[0].Text != "hello bob" || got[0].From != "alice" {
		t.Fatalf("bob read %+v", got)
	}
	// bob's history shows his messages read by alice (read receipts).
	// Receipts leave 1 to 10 s after they are made (docs/protocol.md
	// 6.10), with the next command that connects once due: alice reads
	// until hers have gone.
	var all []jsonMessage
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		all, _ = bob.readJSON("--all")
		if len(all) != 3 {
			t.Fatalf("bob --all: got %d messages, want 3", len(all))
		}
		read := true
		for _, m := range all {
			read = read && (!m.Outgoing || m.State == "read")
		}
		if read {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's messages are not all read after 2 minutes: %+v", all)
		}
		alice.run("", "read")
	}
	// Both see the same safety number.
	sa := strings.Split(strings.TrimSpace(alice.must("contacts", "--safety")), "\t")
	sb := strings.Split(strings.TrimSpace(bob.must("contacts", "--safety")), "\t")
	if len(sa) != 2 || len(sb) != 2 || sa[0] != "bob" || sb[0] != "alice" || sa[1] != sb[1] {
		t.Fatalf("contacts --safety: alice %q, bob %q", sa, sb)
	}
	// Plain output: one line per message.
	alice.must("send", "bob", "plain")
	if out := bob.must("read"); !strings.HasSuffix(strings.TrimSpace(out), "alice: plain") {
		t.Fatalf("plain read printed %q", out)
	}
}

func TestE2EBadInput(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	alice, bob := newUser(t, r, "alice"), newUser(t, r, "bob")
	connect(t, alice, bob)
	bob.must("send", "alice", "before")
	snapshot := func() string { return bob.must("read", "--all", "--json") }
	before := snapshot()
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown contact", []string{"send", "carol", "hi"}, exitFail, "no contact or group named"},
		{"malformed invite", []string{"add", "ferry://invite?v=1&k=nope"}, exitFail, "invite link"},
		{"not a link", []string{"add", "hello"}, exitFail, "invite link"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "unknown command"},
		{"missing text", []string{"send", "alice"}, exitUsage, "usage"},
		{"init again", []string{"init", "--relay", r.link, "--name", "x"}, exitFail, "already exists"},
		{"bad wait", []string{"read", "--wait", "soon"}, exitUsage, "invalid value"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, errs, code := bob.run("", tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.want) || strings.Count(strings.TrimSpace(errs), "\n") > 2 {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", code, errs, tt.code, tt.want)
			}
		})
	}
	if after := snapshot(); after != before {
		t.Fatalf("history changed after bad input:\n%s\nwant\n%s", after, before)
	}
	// An invite whose relay cannot be reached: exit 3, no contact added.
	carol := newUser(t, r, "carol")
	inv := strings.Replace(strings.TrimSpace(alice.must("invite")), r.addr, freeAddr(t), 1)
	if _, errs, code := carol.run("", "add", inv); code != exitUnreachable || !strings.Contains(errs, "nothing answers at tcp 127.0.0.1:") {
		t.Fatalf("add with the inviter's relay unreachable: exit %d, %q", code, errs)
	}
	if got := carol.must("contacts"); got != "" {
		t.Fatalf("carol has contacts %q after a failed add", got)
	}
	// A profile with a passphrase refuses a wrong one and stays usable.
	bin, _ := binaries(t)
	home := filepath.Join(t.TempDir(), "pat")
	pass := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(pass, []byte("right horse\n"), 0o600)
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("wrong horse\n"), 0o600)
	pat := &user{t: t, bin: bin, home: home, name: "pat"}
	pat.must("--passphrase-file", pass, "init", "--relay", r.link, "--name", "pat")
	if _, errs, code := pat.run("", "--passphrase-file", wrong, "contacts"); code != exitFail || !strings.Contains(errs, "wrong passphrase") {
		t.Fatalf("wrong passphrase: exit %d, %q", code, errs)
	}
	if _, errs, code := pat.run("", "contacts"); code != exitFail || !strings.Contains(errs, "passphrase") {
		t.Fatalf("missing passphrase: exit %d, %q", code, errs)
	}
	pat.must("--passphrase-file", pass, "contacts")
}

func TestE2EOfflineRecipientAndOutbox(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	alice, bob := newUser(t, r, "alice"), newUser(t, r, "bob")
	connect(t, alice, bob)
	// alice is offline for the whole send.
	for i := range 5 {
		bob.must("send", "alice", fmt.Sprint("offline ", i))
	}
	// The relay goes down: bob's message stays in his outbox, exit 3.
	r.kill()
	_, errs, code := bob.run("", "send", "alice", "queued while down")
	if code != exitUnreachable || !strings.Contains(errs, "outbox") {
		t.Fatalf("send with the relay down: exit %d, %q; want 3 and a word about the outbox", code, errs)
	}
	// A profile made while the relay is down registers later.
	bin, _ := binaries(t)
	dave := &user{t: t, bin: bin, home: filepath.Join(t.TempDir(), "dave"), name: "dave"}
	if _, errs, code := dave.run("", "init", "--relay", r.link, "--name", "dave"); code != exitUnreachable || !strings.Contains(errs, "profile created") {
		t.Fatalf("init with the relay down: exit %d, %q", code, errs)
	}
	r.start()
	connect(t, dave, alice)
	// alice comes online: she gets the five, not yet the queued one.
	got, _ := alice.readJSON()
	if len(got) != 5 {
		t.Fatalf("alice got %d messages, want 5: %+v", len(got), got)
	}
	for i, m := range got {
		if m.Text != fmt.Sprint("offline ", i) {
			t.Fatalf("message %d: got %q", i, m.Text)
		}
	}
	// Any later command of bob's that connects delivers the outbox.
	bob.must("read")
	got, _ = alice.readJSON()
	if len(got) != 1 || got[0].Text != "queued while down" {
		t.Fatalf("after bob reconnected alice got %+v", got)
	}
}

// TestE2EChaos is the big test: two users exchange messages in both
// directions while the relay is killed with SIGKILL and restarted several
// times; every message must arrive exactly once and in per-sender order.
// FERRY_SOAK=N raises the count from 1000 per direction to N.
func TestE2EChaos(t *testing.T) {
	n := 1000
	if s := os.Getenv("FERRY_SOAK"); s != "" {
		fmt.Sscan(s, &n)
	}
	r := startRelay(t)
	alice, bob := newUser(t, r, "alice"), newUser(t, r, "bob")
	connect(t, alice, bob)

	stop := make(chan struct{})
	var killer sync.WaitGroup
	killer.Add(1)
	var kills atomic.Int32
	go func() {
		defer killer.Done()
		for kills.Load() < 8 {
			select {
			case <-stop:
				return
			// Reads end as soon as the relay has answered Subscribe, so
			// an exchange takes a few seconds: kill often.
			case <-time.After(250 * time.Millisecond):
			}
			r.kill()
			kills.Add(1)
			time.Sleep(200 * time.Millisecond)
			r.start()
		}
	}()
	var wg sync.WaitGroup
	var ra, rb chaosResult
	wg.Add(2)
	go func() { defer wg.Done(); ra = chaosExchange(alice, "bob", "a", n) }()
	go func() { defer wg.Done(); rb = chaosExchange(bob, "alice", "b", n) }()
	wg.Wait()
	for _, res := range []chaosResult{ra, rb} {
		if res.err != nil {
			t.Fatal(res.err)
		}
	}
	// Drain: both keep reading (which also flushes their outboxes: a
	// user who already has everything may still hold the peer's last
	// messages in the outbox) until each has all of the other's, while
	// the killer goes on.
	// Reads go on until the relay has been killed a few times too, so a
	// fast exchange still meets the kills.
	deadline := time.Now().Add(90 * time.Second)
	for (count(ra.got, "bob") < n || count(rb.got, "alice") < n || kills.Load() < 3) && time.Now().Before(deadline) {
		ma, _ := alice.readJSON()
		mb, _ := bob.readJSON()
		ra.got = append(ra.got, ma...)
		rb.got = append(rb.got, mb...)
		if len(ma)+len(mb) == 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	close(stop)
	killer.Wait()
	t.Logf("relay killed %d times", kills.Load())
	if k := kills.Load(); k < 3 {
		t.Errorf("relay was killed only %d times; the exchange finished too fast to test much", k)
	}
	checkOrder(t, "alice", ra.got, "bob", "b", n)
	checkOrder(t, "bob", rb.got, "alice", "a", n)
}

// chaosResult is what one side of TestE2EChaos read.
type chaosResult struct {
	got []jsonMessage
	err error
}

// chaosExchange has u alternate: send a batch of n messages (as lines) to peer,
// read what arrived. Exit status 3 (relay down) is expected; the outbox
// keeps the rest.
func chaosExchange(u *user, peer, prefix string, n int) chaosResult {
	const batch = 50
	var res chaosResult
	for i := 0; i < n; i += batch {
		var lines strings.Builder
		for j := i; j < min(i+batch, n); j++ {
			fmt.Fprintf(&lines, "%s-%05d\n", prefix, j)
		}
		_, errs, code := u.run(lines.String(), "send", "--lines", peer, "-")
		if code != 0 && code != exitUnreachable {
			res.err = fmt.Errorf("%s send: exit %d: %s", u.name, code, errs)
			return res
		}
		ms, _ := u.readJSON()
		res.got = append(res.got, ms...)
	}
	return res
}

// checkOrder checks that who got the n messages of from exactly once, in
// order.
func checkOrder(t *testing.T, who string, got []jsonMessage, from, prefix string, n int) {
	t.Helper()
	next := 0
	for _, m := range got {
		if m.From != from {
			continue
		}
		want := fmt.Sprintf("%s-%05d", prefix, next)
		if m.Text != want {
			t.Fatalf("%s: message %d from %s is %q, want %q (duplicate, loss or reorder)", who, next, from, m.Text, want)
		}
		next++
	}
	if next != n {
		t.Fatalf("%s got %d messages from %s, want %d", who, next, from, n)
	}
}

func count(ms []jsonMessage, from string) int {
	n := 0
	for _, m := range ms {
		if m.From == from {
			n++
		}
	}
	return n
}

// TestE2EChatTmux drives ferry chat in a real terminal (tmux): the user
// types a message and sees the reply arrive.
func TestE2EChatTmux(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("tmux is not installed (.ci/run installs it)")
	}
	t.Parallel()
	r := startRelay(t)
	alice, bob := newUser(t, r, "alice"), newUser(t, r, "bob")
	connect(t, alice, bob)
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	tm := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(tmux, append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	tm("new-session", "-d", "-x", "100", "-y", "20", "-s", "chat",
		fmt.Sprintf("env -u FERRY_PASSPHRASE TERM=xterm-256color %s --home %s chat", alice.bin, alice.home))
	t.Cleanup(func() { exec.Command(tmux, "-S", sock, "kill-server").Run() })
	waitScreen := func(want string) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			screen := tm("capture-pane", "-p", "-t", "chat")
			if strings.Contains(screen, want) {
				t.Logf("%v: screen shows %q", time.Now().Format("15:04:05.000"), want)
				return screen
			}
			if time.Now().After(deadline) {
				t.Fatalf("screen never showed %q:\n%s", want, screen)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitScreen("> bob")
	tm("send-keys", "-t", "chat", "-l", "hello from the tui")
	tm("send-keys", "-t", "chat", "Enter")
	waitScreen("me: hello from the tui")
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, _ := bob.readJSON()
		if len(got) == 1 && got[0].Text == "hello from the tui" {
			break
		}
		if len(got) > 0 || time.Now().After(deadline) {
			t.Fatalf("bob read %+v", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	bob.must("send", "alice", "reply from bob")
	waitScreen("bob: reply from bob")
	// The read receipt for bob's message reaches bob once alice's screen
	// showed it; and alice's message shows as read by bob, whose read
	// receipt leaves 1 to 10 s after his ferry read, with his next
	// command once due (docs/protocol.md 6.10).
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		if strings.Contains(tm("capture-pane", "-p", "-t", "chat"), "hello from the tui (read)") {
			break
		}
		if time.Now().After(deadline) {
			waitScreen("hello from the tui (read)")
		}
		bob.run("", "read")
	}
	tm("send-keys", "-t", "chat", "Escape")
}

// TestE2EReadWait checks that ferry read --wait prints messages as they
// arrive, each once, and that invite --qr draws a code without changing
// stdout.
func TestE2EReadWait(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	alice, bob := newUser(t, r, "alice"), newUser(t, r, "bob")
	out, errs, code := alice.run("", "invite", "--qr")
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "ferry://invite?") || !strings.Contains(errs, "█") {
		t.Fatalf("invite --qr: exit %d, stdout %q, stderr %d bytes", code, out, len(errs))
	}
	if got := strings.TrimSpace(bob.must("add", "--wait", "0", strings.TrimSpace(out))); got != "alice" {
		t.Fatalf("add printed %q", got)
	}
	cmd := exec.Command(alice.bin, "--home", alice.home, "read", "--wait", "20s", "--json")
	cmd.Env = filterEnv(os.Environ(), "FERRY_PASSPHRASE")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	lines := make(chan jsonMessage, 10)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m jsonMessage
			if json.Unmarshal(sc.Bytes(), &m) == nil && m.Kind != "notice" {
				lines <- m
			}
		}
		close(lines)
	}()
	for i := range 3 {
		want := fmt.Sprint("live ", i)
		bob.must("send", "alice", want)
		select {
		case m := <-lines:
			if m.Text != want || m.From != "bob" {
				t.Fatalf("read --wait printed %+v, want %q from bob", m, want)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("read --wait did not print %q", want)
		}
	}
	// The messages were shown: bob's history says read.
	deadline := time.Now().Add(15 * time.Second)
	for {
		all, _ := bob.readJSON("--all")
		read := 0
		for _, m := range all {
			if m.Outgoing && m.State == "read" {
				read++
			}
		}
		if read == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's messages: %+v, want 3 read", all)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestE2EClientKills kills the clients, not the relay: the sender's ferry
// send and the recipient's ferry read --wait get SIGKILL at arbitrary
// moments while messages flow. Envelopes the relay did not acknowledge are
// resent by a later command (same id, de-duplicated by the relay);
// envelopes the recipient stored but did not acknowledge are redelivered
// (de-duplicated by its seen ids). At the end the recipient's history holds
// exactly the messages the sender's history holds, once each, in order.
func TestE2EClientKills(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	alice, bob := newUser(t, r, "alice"), newUser(t, r, "bob")
	connect(t, alice, bob)
	start := func(u *user, stdin string, args ...string) *exec.Cmd {
		cmd := exec.Command(u.bin, append([]string{"--home", u.home}, args...)...)
		cmd.Env = filterEnv(os.Environ(), "FERRY_PASSPHRASE")
		cmd.Stdin = strings.NewReader(stdin)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	batch := func(prefix string, from int) string {
		var lines strings.Builder
		for j := from; j < from+100; j++ {
			fmt.Fprintf(&lines, "%s-%05d\n", prefix, j)
		}
		return lines.String()
	}
	// The kills come at moments spread over how long a send of 100 takes
	// on this machine now (a fixed time would be too early on a loaded
	// one, where starting the process takes longer): a send that runs to
	// its end, timed, first. Load changes while the test runs: if no
	// killed send got as far as queueing, the rounds run again with
	// later kills.
	began := time.Now()
	if err := start(bob, batch("c", 0), "send", "--lines", "alice", "-").Wait(); err != nil {
		t.Fatalf("bob's send of 100 lines: %v", err)
	}
	full := time.Since(began)
	var want []string
	killed, rounds := 0, 0
	for attempt := 0; killed == 0; attempt++ {
		if attempt == 4 {
			t.Fatalf("no killed send queued anything in %d rounds; the kills came too early to test anything (a whole send took %v at first)", rounds, full)
		}
		scale := full << (2 * attempt)
		for i := 0; i < 800; i += 100 {
			send := start(bob, batch(fmt.Sprintf("k%d", attempt), i), "send", "--lines", "alice", "-")
			read := start(alice, "", "read", "--wait", "10s", "--json")
			time.Sleep(scale * time.Duration(40+(i*37)%250) / 200) // 0.2 to 1.45 of it
			send.Process.Kill()
			read.Process.Kill()
			send.Wait()
			read.Wait()
			rounds++
		}
		// What bob's profile says he sent (a send killed before its
		// transaction committed queued nothing).
		want, killed = want[:0], 0
		sent, _ := bob.readJSON("--all")
		for _, m := range sent {
			if m.Outgoing {
				want = append(want, m.Text)
				if strings.HasPrefix(m.Text, "k") {
					killed++
				}
			}
		}
	}
	// Later commands deliver what is left.
	bob.must("read")
	var got []string
	deadline := time.Now().Add(60 * time.Second)
	for {
		got = got[:0]
		ms, _ := alice.readJSON("--all")
		for _, m := range ms {
			if m.From == "bob" {
				got = append(got, m.Text)
			}
		}
		if len(got) >= len(want) || time.Now().After(deadline) {
			break
		}
		bob.run("", "read")
		time.Sleep(200 * time.Millisecond)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("alice has %d messages from bob, bob sent %d:\ngot  %v\nwant %v", len(got), len(want), got, want)
	}
	t.Logf("%d of %d messages were queued before the kills (a whole send took %v at first), and with 100 sent first all arrived exactly once", killed, rounds*100, full)
}

// TestE2EInviteMadeOffline: an invite made while the inviter's relay is
// down works once the inviter's Ferry has connected; before that, add
// says what to do, exits 3 and stores nothing.
func TestE2EInviteMadeOffline(t *testing.T) {
	t.Parallel()
	r := startRelay(t)
	alice, bob := newUser(t, r, "alice"), newUser(t, r, "bob")
	r.kill()
	out, errs, code := alice.run("", "invite")
	inv := strings.TrimSpace(out)
	if code != exitUnreachable || !strings.Contains(errs, "invite above is made") || inv == "" {
		t.Fatalf("invite with the relay down: exit %d, %q, %q; want 3, the invite and a word about it", code, out, errs)
	}
	r.start()
	_, errs, code = bob.run("", "add", "--wait", "0", inv)
	if code != exitUnreachable || !strings.Contains(errs, "ask the inviter to open Ferry") {
		t.Fatalf("add before the inviter connected: exit %d, %q; want 3 and what to do", code, errs)
	}
	if out, _, _ := bob.run("", "contacts"); strings.Contains(out, "alice") {
		t.Fatalf("a refused add stored a contact: %q", out)
	}
	alice.must("read") // registers the invite's token
	if got := strings.TrimSpace(bob.must("add", "--wait", "0", inv)); got != "alice" {
		t.Fatalf("ferry add printed %q, want alice", got)
	}
}

// TestE2EInitOnNearlyFullRelay: on a relay whose disk budget is down to
// its reserve, a user who reads their mail still gets messages, and a new
// profile is made but not registered: init exits 3 and says why and that
// the next command registers it, which it does once the relay has room.
// Before, init exited 1 with the refusal, and running it again said that
// a profile already existed.
func TestE2EInitOnNearlyFullRelay(t *testing.T) {
	r := startRelay(t)
	alice, bob := newUser(t, r, "alice"), newUser(t, r, "bob")
	connect(t, alice, bob)
	r.stop()
	// A reserve larger than the disk: whatever other tests write or free
	// meanwhile, only the reserve is left.
	r.extra = []string{"--disk-reserve-mib", strconv.Itoa(1 << 30)}
	r.start()

	bob.must("send", "alice", "the disk is nearly full")
	wantText(t, alice, "bob", "the disk is nearly full")
	bin, _ := binaries(t)
	dave := &user{t: t, bin: bin, home: filepath.Join(t.TempDir(), "dave"), name: "dave"}
	_, errs, code := dave.run("", "init", "--relay", r.link, "--name", "dave")
	if code != exitUnreachable || !strings.Contains(errs, "profile created") || !strings.Contains(errs, "storage is full") {
		t.Fatalf("init on a nearly full relay: exit %d, %q; want 3, the profile created, and why", code, errs)
	}

	r.stop()
	r.extra = nil
	r.start()
	connect(t, dave, alice)
	dave.must("send", "alice", "registered after all")
	wantText(t, alice, "dave", "registered after all")
}

// wantText checks that u's next read has a message from from saying text.
func wantText(t *testing.T, u *user, from, text string) {
	t.Helper()
	got, _ := u.readJSON()
	for _, m := range got {
		if m.From == from && m.Text == text {
			return
		}
	}
	t.Fatalf("%s read %+v, want %q from %s", u.name, got, text, from)
}
