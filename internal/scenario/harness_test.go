package scenario

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor"
	"github.com/ferry-im/ferry/censor/censortest"
	"github.com/ferry-im/ferry/link"
)

var (
	msgsFlag      = flag.Int("scenario.n", 20, "messages each way per scenario (1000 for the full run)")
	timescaleFlag = flag.Float64("scenario.timescale", 30, "run the policies' outage schedules this many times faster (1: as shipped)")
	seedFlag      = flag.Uint64("scenario.seed", 1, "ferry-censor --seed of every scenario")
)

// The loopback addresses of a scenario: the relay listens on relayIP, a
// reverse proxy in front of it (ip-block) on proxyIP, and ferry-censor and
// the clients on censorIP. All of 127.0.0.0/8 is loopback on Linux.
const (
	censorIP = "127.0.0.1"
	relayIP  = "127.0.0.2"
	proxyIP  = "127.0.0.3"
)

// bin holds the paths of the built commands.
var bin struct {
	dir                  string
	ferry, relay, censor string
	transports           []string // the transports ferry-relay can listen on
}

func TestMain(m *testing.M) {
	flag.Parse()
	// The rows spend their time waiting on processes and timeouts, not on
	// the CPU: run them all at once unless -parallel says otherwise.
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		flag.Set("test.parallel", fmt.Sprint(len(rows)))
	}
	code := 1
	if err := build(); err != nil {
		fmt.Fprintln(os.Stderr, "scenario:", err)
	} else {
		announcePending()
		code = m.Run()
	}
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
	os.Exit(code)
}

// build builds the three commands into a temporary directory and finds
// the transports the relay has.
func build() error {
	dir, err := os.MkdirTemp("", "ferry-scenario-bin")
	if err != nil {
		return err
	}
	bin.dir = dir
	out, err := exec.Command("go", "build", "-o", dir,
		"github.com/ferry-im/ferry/cmd/ferry", "github.com/ferry-im/ferry/cmd/ferry-relay", "github.com/ferry-im/ferry/cmd/ferry-censor").CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	bin.ferry, bin.relay, bin.censor = filepath.Join(dir, "ferry"), filepath.Join(dir, "ferry-relay"), filepath.Join(dir, "ferry-censor")
	bin.transports, err = relayTransports()
	return err
}

// relayTransports asks ferry-relay which transports it can listen on: it
// lists them when refusing an unknown one.
func relayTransports() ([]string, error) {
	out, _ := exec.Command(bin.relay, "--data", filepath.Join(bin.dir, "probe"), "--listen", "nosuch=127.0.0.1:1").CombinedOutput()
	m := regexp.MustCompile(`this relay has: ([a-z0-9, ]+)\)`).FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("ferry-relay did not list its transports when given an unknown one:\n%s", out)
	}
	return strings.Split(string(m[1]), ", "), nil
}

// freePort returns an address on ip whose port was free a moment ago,
// below the ephemeral range and handed out once per run.
func freePort(t *testing.T, ip string) string { return censortest.FreeAddr(t, ip) }

// proc is a command the test started and stops.
type proc struct {
	cmd *exec.Cmd
	out censortest.Buffer // stdout and stderr
}

// start runs path with args until the test ends (SIGTERM, then SIGKILL
// after 5 s), and waits until its output matches ready n times.
func start(t *testing.T, ready *regexp.Regexp, n int, path string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(path, args...)}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	// If the test binary dies (a timeout), so does the process.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	})
	for deadline := time.Now().Add(20 * time.Second); len(ready.FindAllString(p.out.String(), -1)) < n; time.Sleep(20 * time.Millisecond) {
		select {
		case <-done:
			t.Fatalf("%s exited before it was ready:\n%s", filepath.Base(path), p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 20 s:\n%s", filepath.Base(path), p.out.String())
		}
	}
	return p
}

// world is one scenario's relay, censor and link.
type world struct {
	t        *testing.T
	dir      string
	policy   string
	link     string            // the relay's link: every endpoint through the censor
	relayAt  map[string]string // transport -> the relay's listening address
	upstream map[string]string // transport -> where the censor forwards it: the relay, or a proxy before it
	censorAt map[string]string // transport -> the censor's address for it
	log      string            // the censor's JSON log
	relay    *proc
	censor   *proc
	cfg      worldConfig
	lastUser *user // alice of the last pair made
}

// worldConfig adds to a scenario's relay and censor.
type worldConfig struct {
	block     []string          // --block addresses
	forwards  map[string]string // extra censor forwards, listen -> upstream
	tunnel    *tunnelAddrs      // the naive TLS tunnel of the tls-in-tls row
	relayArgs []string          // more ferry-relay flags
	// proxy, once the relay runs, starts what stands between the censor
	// and the relay for some transports and returns their addresses.
	proxy func(t *testing.T, w *world) map[string]string
}

// startWorld starts a relay on every transport it has and ferry-censor in
// front of it with policy.
func startWorld(t *testing.T, policy string, cfg worldConfig) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), policy: policy, relayAt: map[string]string{}, upstream: map[string]string{}, censorAt: map[string]string{}, cfg: cfg}
	w.log = filepath.Join(w.dir, "censor.jsonl")
	relayArgs := []string{"--data", filepath.Join(w.dir, "relay"), "--log-level", "warn"}
	for _, tr := range bin.transports {
		w.relayAt[tr], w.censorAt[tr] = freePort(t, relayIP), freePort(t, censorIP)
		w.upstream[tr] = w.relayAt[tr]
		relayArgs = append(relayArgs, "--listen", tr+"="+w.relayAt[tr], "--public", tr+"="+w.censorAt[tr])
	}
	if slices.Contains(bin.transports, "https") {
		// A relay with a name, as a deployed one has (its certificate is
		// pinned in the link): Chromium sends SNI, and so does ferry.
		relayArgs = append(relayArgs, "--https-sni", "www.example.com")
	}
	relay := start(t, regexp.MustCompile(`(?m)^ferry://relay\?\S+$`), 1, bin.relay, append(relayArgs, cfg.relayArgs...)...)
	w.link = regexp.MustCompile(`(?m)^ferry://relay\?\S+$`).FindString(relay.out.String())
	w.relay = relay
	if cfg.proxy != nil {
		for tr, addr := range cfg.proxy(t, w) {
			w.upstream[tr] = addr
		}
	}
	censorArgs := []string{"--policy", w.policyFile(policy), "--seed", fmt.Sprint(*seedFlag), "--log", w.log}
	for _, tr := range bin.transports {
		censorArgs = append(censorArgs, "--forward", w.censorAt[tr]+"="+w.upstream[tr])
	}
	for l, u := range cfg.forwards {
		censorArgs = append(censorArgs, "--forward", l+"="+u)
	}
	for _, b := range cfg.block {
		censorArgs = append(censorArgs, "--block", b)
	}
	w.censor = start(t, regexp.MustCompile("listening on"), len(bin.transports)+len(cfg.forwards), bin.censor, censorArgs...)
	return w
}

// ciProbeTimeout is the probe rule's read timeout when the scenarios run
// faster than real time: the prober's 10 s default makes a round of 22
// probes last about a minute.
const ciProbeTimeout = 2 * time.Second

// policyFile returns the policy to run: the shipped one, or with
// -scenario.timescale a copy whose outage schedules run that many times
// faster and whose probes wait ciProbeTimeout.
func (w *world) policyFile(name string) string {
	p, err := censor.LoadPolicy(name)
	if err != nil {
		w.t.Fatal(err)
	}
	if *timescaleFlag == 1 {
		return name
	}
	scaled := false
	for _, r := range p.Rules {
		if o := r.Outage; o != nil {
			for _, d := range []*censor.Duration{&o.UpMin, &o.UpMax, &o.DownMin, &o.DownMax} {
				if *d == 0 {
					w.t.Fatalf("policy %s: an outage bound is left to its default; spell it out to scale it", name)
				}
				*d = censor.Duration(float64(*d) / *timescaleFlag)
			}
			scaled = true
		}
		if pr := r.Probe; pr != nil && pr.ReadTimeout == 0 {
			pr.ReadTimeout, scaled = censor.Duration(ciProbeTimeout), true
		}
	}
	if !scaled {
		return name
	}
	b, err := json.Marshal(p)
	if err != nil {
		w.t.Fatal(err)
	}
	path := filepath.Join(w.dir, name+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		w.t.Fatal(err)
	}
	return path
}

// linkVia returns the relay's link cut down to the given transports, or
// with the endpoint addresses replaced by addr when addr is not empty.
func (w *world) linkVia(addr string, transports ...string) string {
	w.t.Helper()
	r, err := link.ParseRelay(w.link)
	if err != nil {
		w.t.Fatal(err)
	}
	var eps []link.Endpoint
	for _, ep := range r.Endpoints {
		if slices.Contains(transports, ep.Transport) {
			if addr != "" {
				ep.Addr = addr
			}
			eps = append(eps, ep)
		}
	}
	if len(eps) == 0 {
		w.t.Fatalf("the relay's link %s has none of %v", w.link, transports)
	}
	r.Endpoints = eps
	return r.String()
}

// entries returns the censor's log so far.
func (w *world) entries() []censor.LogEntry {
	w.t.Helper()
	b, err := os.ReadFile(w.log)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		w.t.Fatal(err)
	}
	var out []censor.LogEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e censor.LogEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			w.t.Fatalf("censor log line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// waitEntry waits up to d for a log entry that ok accepts.
func (w *world) waitEntry(d time.Duration, what string, ok func(censor.LogEntry) bool) censor.LogEntry {
	w.t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(50 * time.Millisecond) {
		for _, e := range w.entries() {
			if ok(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("no censor log entry for %s after %v; log:\n%s", what, d, w.logTail())
		}
	}
}

// logTail is the end of the censor's log and output, for failures.
func (w *world) logTail() string {
	b, _ := os.ReadFile(w.log)
	s := string(b)
	if len(s) > 4000 {
		s = "..." + s[len(s)-4000:]
	}
	return s + "\nferry-censor output:\n" + w.censor.out.String()
}

// transportOf returns the transport the censor forwards to addr.
func (w *world) transportOf(addr string) string {
	for tr, a := range w.upstream {
		if a == addr {
			return tr
		}
	}
	return ""
}

// passedTransports lists the transports of the flows the censor let
// through, in the order the flows started, each once.
func (w *world) passedTransports() []string {
	es := w.entries()
	slices.SortStableFunc(es, func(a, b censor.LogEntry) int { return a.Time.Compare(b.Time) })
	var out []string
	for _, e := range es {
		if tr := w.transportOf(e.Server); tr != "" && e.Action != censor.Reset && e.Action != censor.Drop && e.Action != censor.NullRoute && e.BytesDown > 0 {
			out = append(slices.DeleteFunc(out, func(s string) bool { return s == tr }), tr)
		}
	}
	return out
}

// user runs ferry commands against one profile.
type user struct {
	t        *testing.T
	home     string
	name     string
	lastRead time.Time
}

// readEvery spaces a user's reads: each subscribes, and the relay allows
// 2 Subscribes a second per client key.
const readEvery = 600 * time.Millisecond

// newUser makes a profile on the relay link; its registration may wait
// for a later command (exit 3).
func newUser(t *testing.T, w *world, name, relayLink string) *user {
	t.Helper()
	u, err := initUser(t, w, name, relayLink)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// initUser is newUser for any goroutine.
func initUser(t *testing.T, w *world, name, relayLink string) (*user, error) {
	u := &user{t: t, home: filepath.Join(w.dir, name), name: name}
	if _, errs, code := u.run("", "init", "--relay", relayLink, "--name", name); code != 0 && code != 3 {
		return nil, fmt.Errorf("%s: ferry init: exit %d: %s", name, code, errs)
	}
	return u, nil
}

// pair makes alice and bob (with suffix) on relayLink, at the same time,
// and makes them contacts.
func pair(t *testing.T, w *world, relayLink, suffix string) (a, b *user) {
	t.Helper()
	var wg sync.WaitGroup
	var errA, errB error
	wg.Go(func() { a, errA = initUser(t, w, "alice"+suffix, relayLink) })
	wg.Go(func() { b, errB = initUser(t, w, "bob"+suffix, relayLink) })
	wg.Wait()
	if err := errors.Join(errA, errB); err != nil {
		t.Fatal(err)
	}
	connect(t, a, b)
	w.lastUser = a
	return a, b
}

// run runs ferry with args and returns stdout, stderr and the exit status.
func (u *user) run(stdin string, args ...string) (string, string, int) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.ferry, append([]string{"--home", u.home}, args...)...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "FERRY_PASSPHRASE=") })
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	case err != nil:
		u.t.Fatalf("ferry %v: %v", args, err)
	}
	return out.String(), errb.String(), 0
}

// message is a line of ferry read --json.
type message struct {
	From, To, Text string
}

// tryRead runs ferry read --json, at most once every readEvery, and
// returns its output and exit status.
func (u *user) tryRead() (string, string, int) {
	u.t.Helper()
	time.Sleep(time.Until(u.lastRead.Add(readEvery)))
	u.lastRead = time.Now()
	return u.run("", "read", "--json")
}

// Until the client races a link's endpoints, each command under a censor
// that drops the first ones waits 5 s for each before it reaches one that
// works: connecting two users takes a dozen commands.
const (
	connectTime  = 90 * time.Second
	exchangeTime = 90 * time.Second
	perMessage   = 200 * time.Millisecond // the throttle moves 140 kbit/s
)

// connect makes a and b contacts through the censor: a invites and waits
// connected (ferry read --wait) while b adds, until a knows b.
func connect(t *testing.T, a, b *user) {
	t.Helper()
	deadline := time.Now().Add(connectTime)
	inv := ""
	for inv == "" {
		// Exit 3 still prints the invite; a's wait below registers it.
		out, errs, code := a.run("", "invite")
		inv = strings.TrimSpace(out)
		if (code != 0 && code != 3) || time.Now().After(deadline) {
			t.Fatalf("%s: ferry invite: exit %d: %s", a.name, code, errs)
		}
	}
	ra := a.receive(deadline)
	// a's waiting read stores b's introduction (contacts then shows b) a
	// moment before it prints the notice that b accepted: stop it only
	// after that notice, or the exchange's first read would print it.
	defer ra.wait(1)
	// add exits 3 when it stored the contact but could not send the
	// introduction (it prints the name; a later command delivers it), and
	// also when it could not fetch the inviter's prekeys (an outage):
	// then it stored nothing, and only another add does.
	stored := false
	add := func() int {
		out, errs, code := b.run("", "add", inv)
		if code != 0 && code != 3 {
			t.Fatalf("%s: ferry add: exit %d: %s", b.name, code, errs)
		}
		stored = strings.TrimSpace(out) != ""
		return code
	}
	code := add()
	for {
		if out, _, _ := a.run("", "contacts"); strings.TrimSpace(out) == b.name {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never learned of %s (%s's last add: exit %d, contact stored %v)", a.name, b.name, b.name, code, stored)
		}
		switch {
		case !stored:
			code = add()
		case code == 3:
			b.tryRead() // delivers the introduction add could not
		default:
			time.Sleep(300 * time.Millisecond)
		}
	}
}

// lines returns n numbered messages from a to b.
func lines(from, to string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s to %s %05d", from, to, i+1)
	}
	return out
}

// send queues texts to the contact; the relay may be unreachable for
// some (exit 3): they stay in the outbox and later commands deliver them.
func (u *user) send(to string, texts []string) {
	u.t.Helper()
	if _, errs, code := u.run(strings.Join(texts, "\n")+"\n", "send", "--lines", to, "-"); code != 0 && code != 3 {
		u.t.Fatalf("%s: ferry send: exit %d: %s", u.name, code, errs)
	}
}

// exchange sends n messages each way between a and b (in batches, each
// after the before callback, if any) while both wait for the other's with
// ferry read --wait, until every message has arrived or the deadline
// passes. It fails the test unless each side got exactly the other's
// messages, once each, in order.
func exchange(t *testing.T, a, b *user, n, batches int, before func(batch int)) {
	t.Helper()
	deadline := time.Now().Add(exchangeTime + time.Duration(n)*perMessage)
	ab, ba := lines(a.name, b.name, n), lines(b.name, a.name, n)
	ra, rb := a.receive(deadline), b.receive(deadline)
	for i := range batches {
		if before != nil {
			before(i)
		}
		lo, hi := i*n/batches, (i+1)*n/batches
		var wg sync.WaitGroup
		wg.Go(func() { a.send(b.name, ab[lo:hi]) })
		wg.Go(func() { b.send(a.name, ba[lo:hi]) })
		wg.Wait()
	}
	for r, want := range map[*receiver][]string{ra: ba, rb: ab} {
		if got := r.wait(n); !slices.Equal(got, want) {
			t.Errorf("%s received %d messages, want %d exactly once and in order: %s", r.u.name, len(got), n, diffSummary(got, want))
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// receiver collects what a user's ferry read --wait --json prints, run
// again whenever it exits, until it is stopped or the deadline passes.
type receiver struct {
	u        *user
	deadline time.Time
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex // mu protects texts
	texts    []string
}

// receive starts a receiver for u.
func (u *user) receive(deadline time.Time) *receiver {
	r := &receiver{u: u, deadline: deadline, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for time.Now().Before(r.deadline) {
			r.runOnce()
			select {
			case <-r.stop:
				return
			case <-time.After(readEvery):
			}
		}
	}()
	return r
}

// runOnce runs one ferry read --wait until it exits or is stopped.
func (r *receiver) runOnce() {
	cmd := exec.Command(bin.ferry, "--home", r.u.home, "read", "--json", "--wait", time.Until(r.deadline).Round(time.Second).String())
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "FERRY_PASSPHRASE=") })
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return
	}
	if err := cmd.Start(); err != nil {
		return
	}
	exited := make(chan struct{})
	go func() {
		select {
		case <-r.stop:
			cmd.Process.Signal(os.Interrupt) // the usual way to end a long wait
		case <-exited:
		}
	}()
	sc := bufio.NewScanner(out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m message
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			r.mu.Lock()
			r.texts = append(r.texts, m.Text)
			r.mu.Unlock()
		}
	}
	cmd.Wait()
	close(exited)
}

// wait returns the texts once there are n of them or the deadline has
// passed, and stops the receiver.
func (r *receiver) wait(n int) []string {
	for time.Now().Before(r.deadline) {
		r.mu.Lock()
		k := len(r.texts)
		r.mu.Unlock()
		if k >= n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(r.stop)
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.texts)
}

// diffSummary says how got differs from want.
func diffSummary(got, want []string) string {
	seen := map[string]int{}
	for _, s := range got {
		seen[s]++
	}
	var missing, dup int
	for _, s := range want {
		switch seen[s] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("%d missing, %d duplicated, first difference at %d: %q, want %q", missing, dup, i, got[i], want[i])
		}
	}
	return fmt.Sprintf("%d missing, %d duplicated", missing, dup)
}
