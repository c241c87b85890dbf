package scenario

import (
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor"
	"github.com/ferry-im/ferry/censor/censortest"
	"github.com/ferry-im/ferry/transport/https/httpstest"
)

// row is one scenario of the matrix: a shipped policy, what must get
// through it, and the control that shows it acting.
type row struct {
	policy string
	// needs are the transports of which at least one must exist for the
	// main part (the exchange) to be able to pass; none means any.
	needs []string
	// endOn are the transports the clients may end on; none means any.
	endOn []string
	// cfg adds to the relay and censor.
	cfg func(t *testing.T) worldConfig
	// main runs the exchange; exchangeDefault when nil.
	main func(t *testing.T, w *world, n int)
	// httpsAlone: after main, two new users on a link cut down to https
	// exchange n messages each way, and the censor stopped no https
	// flow: the https transport gets through this policy by itself.
	httpsAlone bool
	// control shows the censor stopping what the policy targets.
	control func(t *testing.T, w *world)
}

// pendingRows are the rows whose main part waits for transports that
// have not landed (docs/censor.md and the matrix notes list the same):
// they run their control only. A row listed here whose transports exist,
// or a row not listed whose transports do not, fails: when a transport
// lands, its rows leave this list in the same change.
var pendingRows = map[string]string{}

// brokenRows are the rows whose main part fails today because of a known
// bug elsewhere, with the bug and who owns it (the matrix notes list the
// same). They run their control only, unless -scenario.pending is given:
// then their main part runs and fails loudly until the bug is fixed, and
// the fix removes the row from this list.
var brokenRows = map[string]string{}

var pendingFlag = flag.Bool("scenario.pending", false, "also run the main part of the rows in brokenRows")

// rows is the matrix: every shipped policy.
var rows = []row{
	{policy: "open", main: exchangeEach, control: controlAllPass},
	{policy: "whatsapp-2017-07", control: controlMediaSNI},
	{policy: "whatsapp-2017-09", httpsAlone: true, control: controlSignature},
	{policy: "fet-2021", needs: []string{"obfs", "https"}, endOn: []string{"obfs", "https"}, httpsAlone: true, control: controlTCPBlocked("fet", censor.Drop, 40)},
	{policy: "probing", needs: []string{"obfs", "https"}, endOn: []string{"obfs", "https"}, main: exchangeAcrossProbing, httpsAlone: true, control: controlProbed},
	{policy: "tls-gate", needs: []string{"https"}, endOn: []string{"https"}, httpsAlone: true, control: controlTCPBlocked("tls-gate", censor.Reset, 1)},
	{policy: "whitelist", needs: []string{"https"}, endOn: []string{"https"}, httpsAlone: true, control: controlTCPBlocked("whitelist", censor.Drop, 1)},
	{policy: "throttle", control: controlThrottled("throttle")},
	{policy: "intermittent", main: exchangeAcrossOutage, control: controlOutage},
	{policy: "ip-block", needs: []string{"https"}, endOn: []string{"https"}, cfg: blockRelay, httpsAlone: true, control: controlNullRoute},
	{policy: "tls-in-tls", cfg: tlsTunnel, httpsAlone: true, control: controlTLSTunnel},
	{policy: "esni-2020", control: controlESNI},
}

// announcePending says on stderr, in every run, which rows wait.
func announcePending() {
	names := slices.Sorted(maps.Keys(pendingRows))
	fmt.Fprintf(os.Stderr, "scenario: ferry-relay has %s; rows whose main part is pending until their transports land: [%s]\n",
		strings.Join(bin.transports, ", "), strings.Join(names, ", "))
	for _, n := range slices.Sorted(maps.Keys(brokenRows)) {
		fmt.Fprintf(os.Stderr, "scenario: row %s: main part NOT RUN (-scenario.pending runs it): %s\n", n, brokenRows[n])
	}
}

// runRow plays the scenario of policy.
func runRow(t *testing.T, policy string) {
	i := slices.IndexFunc(rows, func(r row) bool { return r.policy == policy })
	if i < 0 {
		t.Fatalf("no row for policy %s", policy)
	}
	r := rows[i]
	t.Parallel()
	ready := len(r.needs) == 0 || slices.ContainsFunc(r.needs, func(tr string) bool { return slices.Contains(bin.transports, tr) })
	reason, pending := pendingRows[policy]
	if why, broken := brokenRows[policy]; broken && !*pendingFlag {
		ready, reason = false, "known bug: "+why
	}
	switch {
	case ready && pending:
		t.Fatalf("row %s is listed as pending (%s), but ferry-relay now has %v: remove it from pendingRows and the matrix notes, and make it pass", policy, reason, bin.transports)
	case !ready && !pending && !strings.HasPrefix(reason, "known bug"):
		t.Fatalf("row %s needs one of %v, which ferry-relay (%v) lacks, and is not listed in pendingRows", policy, r.needs, bin.transports)
	}
	var cfg worldConfig
	if r.cfg != nil {
		cfg = r.cfg(t)
	}
	w := startWorld(t, policy, cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("censor log:\n%s\nferry-relay output:\n%s", w.logTail(), w.relay.out.String())
		}
	})
	if ready {
		main := r.main
		if main == nil {
			main = exchangeDefault
		}
		main(t, w, *msgsFlag)
		if ended := w.passedTransports(); len(r.endOn) > 0 && (len(ended) == 0 || !slices.Contains(r.endOn, ended[len(ended)-1])) {
			t.Errorf("the clients ended on %v, want one of %v", ended, r.endOn)
		}
		checkStatus(t, w, r.endOn)
		t.Logf("%s: %d messages each way arrived exactly once, in order; transports that carried them (the last one last): %v", policy, *msgsFlag, w.passedTransports())
		if r.httpsAlone {
			exchangeHTTPSAlone(t, w, *msgsFlag)
		}
	} else {
		t.Logf("%s: main part PENDING (%s); running the control only", policy, reason)
	}
	r.control(t, w)
}

func TestScenarioOpen(t *testing.T)           { runRow(t, "open") }
func TestScenarioWhatsApp201707(t *testing.T) { runRow(t, "whatsapp-2017-07") }
func TestScenarioWhatsApp201709(t *testing.T) { runRow(t, "whatsapp-2017-09") }
func TestScenarioFET2021(t *testing.T)        { runRow(t, "fet-2021") }
func TestScenarioProbing(t *testing.T)        { runRow(t, "probing") }
func TestScenarioTLSGate(t *testing.T)        { runRow(t, "tls-gate") }
func TestScenarioWhitelist(t *testing.T)      { runRow(t, "whitelist") }
func TestScenarioThrottle(t *testing.T)       { runRow(t, "throttle") }
func TestScenarioIntermittent(t *testing.T)   { runRow(t, "intermittent") }
func TestScenarioIPBlock(t *testing.T)        { runRow(t, "ip-block") }
func TestScenarioTLSInTLS(t *testing.T)       { runRow(t, "tls-in-tls") }
func TestScenarioESNI2020(t *testing.T)       { runRow(t, "esni-2020") }

// TestScenarioRowsCoverPolicies: every shipped policy has a row and a test.
func TestScenarioRowsCoverPolicies(t *testing.T) {
	src, err := os.ReadFile("matrix_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range censor.PolicyNames() {
		if !slices.ContainsFunc(rows, func(r row) bool { return r.policy == p }) {
			t.Errorf("policy %s has no row", p)
		}
		if !strings.Contains(string(src), fmt.Sprintf("runRow(t, %q)", p)) {
			t.Errorf("policy %s has no test calling runRow", p)
		}
	}
	for p := range maps.Keys(pendingRows) {
		if !slices.ContainsFunc(rows, func(r row) bool { return r.policy == p }) {
			t.Errorf("pending row %s is not a row", p)
		}
	}
	for p := range maps.Keys(brokenRows) {
		if !slices.ContainsFunc(rows, func(r row) bool { return r.policy == p }) {
			t.Errorf("broken row %s is not a row", p)
		}
	}
}

// checkStatus: ferry status --json of the last user to exchange names a
// transport that carried the exchange (and one of endOn, if any).
func checkStatus(t *testing.T, w *world, endOn []string) {
	u := w.lastUser
	out, errs, code := u.run("", "status", "--json")
	var st struct {
		Online    bool   `json:"online"`
		Transport string `json:"transport"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 {
		t.Fatalf("%s: ferry status --json: exit %d, %q: %v %s", u.name, code, out, err, errs)
	}
	used := w.passedTransports()
	if !st.Online || !slices.Contains(used, st.Transport) || (len(endOn) > 0 && !slices.Contains(endOn, st.Transport)) {
		t.Errorf("%s: ferry status says online %v over %q; the censor passed %v; want one of %v", u.name, st.Online, st.Transport, used, endOn)
	}
}

// exchangeDefault: alice and bob, on the relay's full link, connect and
// exchange n messages each way.
func exchangeDefault(t *testing.T, w *world, n int) {
	a, b := pair(t, w, w.link, "")
	exchange(t, a, b, n, 1, nil)
}

// exchangeEach runs the exchange over each transport in turn, with links
// cut down to it: every transport works.
func exchangeEach(t *testing.T, w *world, n int) {
	for _, tr := range bin.transports {
		l := w.linkVia("", tr)
		a, b := pair(t, w, l, "-"+tr)
		exchange(t, a, b, n, 1, nil)
	}
}

// dialCensor connects to the censor's listener for transport tr from the
// clients' address.
func dialCensor(t *testing.T, w *world, tr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", w.censorAt[tr], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// controlAllPass: the censor saw the clients' flows and passed them all.
func controlAllPass(t *testing.T, w *world) {
	es := w.entries()
	for _, tr := range bin.transports {
		if !slices.ContainsFunc(es, func(e censor.LogEntry) bool { return e.Server == w.upstream[tr] && e.Action == censor.Pass }) {
			t.Errorf("no %s flow through the censor was logged as passed", tr)
		}
	}
	for _, e := range es {
		if e.Action != censor.Pass {
			t.Errorf("open policy: flow %+v", e)
		}
	}
}

// controlMediaSNI: a TLS connection naming a media host is reset.
func controlMediaSNI(t *testing.T, w *world) {
	c := dialCensor(t, w, "tcp")
	err := tls.Client(c, &tls.Config{ServerName: "media.example", InsecureSkipVerify: true}).Handshake()
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("TLS with SNI media.example: %v, want a reset", err)
	}
	w.waitEntry(5*time.Second, "the media host reset", func(e censor.LogEntry) bool {
		return e.Host == "media.example" && e.Action == censor.Reset
	})
}

// controlSignature: the WhatsApp opening is dropped, and tcp flows were
// throttled.
func controlSignature(t *testing.T, w *world) {
	c := dialCensor(t, w, "tcp")
	if _, err := c.Write([]byte("WA\x04\x01\x00\x00\x05hello")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	w.waitEntry(5*time.Second, "the WhatsApp opening dropped", func(e censor.LogEntry) bool {
		return e.Rule == "whatsapp-signature" && e.Action == censor.Drop && e.BytesUp == 0
	})
	// tcp (a non-TLS, non-HTTP first packet) is throttled, and may be cut
	// by an outage first.
	newUser(t, w, "tcp-only", w.linkVia("", "tcp")).tryRead()
	w.waitEntry(5*time.Second, "a throttled or cut tcp flow", func(e censor.LogEntry) bool {
		return e.Server == w.upstream["tcp"] && (e.Rule == "throttle-unknown" || e.Rule == "outage-unknown")
	})
}

// controlThrottled: a tcp-only user's flows are throttled by rule.
func controlThrottled(rule string) func(*testing.T, *world) {
	return func(t *testing.T, w *world) {
		// The client may give up on a connection this slow (exit 3): the
		// censor's log is what shows the throttle.
		newUser(t, w, "tcp-only", w.linkVia("", "tcp")).tryRead()
		w.waitEntry(5*time.Second, "a throttled tcp flow", func(e censor.LogEntry) bool {
			return e.Server == w.upstream["tcp"] && e.Rule == rule && e.Action == censor.Throttle
		})
	}
}

// controlTCPBlocked: a user whose link has only tcp is stopped by rule
// with action: within attempts commands one of its flows is, and its next
// command cannot reach the relay.
func controlTCPBlocked(rule string, action censor.Action, attempts int) func(*testing.T, *world) {
	return func(t *testing.T, w *world) {
		u := newUser(t, w, "tcp-only", w.linkVia("", "tcp"))
		blocked := func(e censor.LogEntry) bool {
			return e.Server == w.upstream["tcp"] && e.Rule == rule && e.Action == action
		}
		for i := 0; !slices.ContainsFunc(w.entries(), blocked); i++ {
			if i == attempts {
				t.Fatalf("%d commands over tcp and no flow %s by %s; log:\n%s", attempts, action, rule, w.logTail())
			}
			u.tryRead()
		}
		if _, _, code := u.tryRead(); code != 3 {
			t.Errorf("tcp-only user after the block: exit %d, want 3 (unreachable)", code)
		}
	}
}

// exchangeAcrossProbing sends half the messages, waits until probing has
// confirmed and blocked the relay's tcp listener (tcp's first packets are
// random-looking), and sends the rest, which must go another way.
func exchangeAcrossProbing(t *testing.T, w *world, n int) {
	a, b := pair(t, w, w.link, "")
	exchange(t, a, b, n, 2, func(batch int) {
		if batch == 1 {
			// A tcp user's random-looking first packet gets the relay's
			// tcp listener probed and blocked, whatever alice and bob use.
			newUser(t, w, "tcp-first", w.linkVia("", "tcp")).tryRead()
			w.waitEntry(45*time.Second, "the relay's tcp listener blocked by probing", probedTCP(w))
		}
	})
}

// probedTCP matches the censor's block of the relay's tcp listener.
func probedTCP(w *world) func(censor.LogEntry) bool {
	return func(e censor.LogEntry) bool {
		return e.Client == "" && e.Server == w.upstream["tcp"] && e.Rule == "probe"
	}
}

// controlProbed: tcp's random-looking first packet gets the relay's tcp
// listener probed, confirmed and blocked for every client; no other
// listener is.
func controlProbed(t *testing.T, w *world) {
	u := newUser(t, w, "tcp-only", w.linkVia("", "tcp"))
	u.tryRead()
	w.waitEntry(45*time.Second, "the relay's tcp listener blocked by probing", probedTCP(w))
	if _, _, code := u.tryRead(); code != 3 {
		t.Errorf("tcp-only user after probing: exit %d, want 3 (unreachable)", code)
	}
	for _, e := range w.entries() {
		if e.Client == "" && e.Rule == "probe" && e.Server != w.upstream["tcp"] {
			t.Errorf("probing confirmed the %s listener: %s", w.transportOf(e.Server), e.Evidence)
		}
	}
}

// exchangeAcrossOutage sends half the messages, waits for an outage to
// begin, and sends the rest into it: the queued messages arrive exactly
// once after it.
func exchangeAcrossOutage(t *testing.T, w *world, n int) {
	a, b := pair(t, w, w.link, "")
	exchange(t, a, b, n, 2, func(batch int) {
		if batch == 1 {
			waitOutage(t, w, time.Duration(float64(5*time.Minute) / *timescaleFlag)+30*time.Second) // intermittent is up for at most 5 min as shipped
		}
	})
}

// waitOutage probes the censor's tcp listener until a connection is cut by
// an outage.
func waitOutage(t *testing.T, w *world, d time.Duration) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", w.censorAt["tcp"], time.Second)
		if err != nil {
			continue
		}
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		if errors.Is(err, syscall.ECONNRESET) {
			return
		}
	}
	t.Fatalf("no outage within %v", d)
}

// controlOutage: connections were cut by the outage rule during the run.
func controlOutage(t *testing.T, w *world) {
	w.waitEntry(time.Second, "an outage", func(e censor.LogEntry) bool { return e.Rule == "outage" && e.Action == censor.Reset })
}

// blockRelay null-routes the relay's address, and puts nginx, on another
// address, in front of its https listener (docs/transports.md 4.6).
func blockRelay(t *testing.T) worldConfig {
	cert := censortest.ExampleComCert(t)
	certFile := filepath.Join(t.TempDir(), "nginx.crt")
	var certPEM []byte
	for _, der := range cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return worldConfig{
		block:     []string{relayIP},
		relayArgs: []string{"--https-behind-proxy", "--tls-cert", certFile, "--https-sni", "www.example.com", "--log-level", "info"},
		proxy: func(t *testing.T, w *world) map[string]string {
			m := regexp.MustCompile(`msg="https transport" path=(/\S+)`).FindStringSubmatch(w.relay.out.String())
			if m == nil {
				t.Fatalf("ferry-relay did not log its https path:\n%s", w.relay.out.String())
			}
			return map[string]string{"https": httpstest.Nginx(t, cert, m[1], w.relayAt["https"], w.relayAt["https"])}
		},
	}
}

// controlNullRoute: the relay's own address is null-routed: a tcp-only
// user cannot reach it, and the censor never saw a connection to it.
func controlNullRoute(t *testing.T, w *world) {
	w.waitEntry(time.Second, "the null route", func(e censor.LogEntry) bool {
		return e.Server == w.upstream["tcp"] && e.Action == censor.NullRoute
	})
	start := time.Now()
	u := newUser(t, w, "tcp-only", w.linkVia("", "tcp"))
	if _, _, code := u.tryRead(); code != 3 || time.Since(start) < time.Second {
		t.Errorf("tcp-only user: exit %d after %v, want 3 (unreachable) after a connect timeout", code, time.Since(start))
	}
	if slices.ContainsFunc(w.entries(), func(e censor.LogEntry) bool { return e.Server == w.upstream["tcp"] && e.Client != "" }) {
		t.Errorf("a connection to the null-routed relay opened")
	}
}

// controlESNI: a ClientHello with encrypted_server_name is dropped.
func controlESNI(t *testing.T, w *world) {
	c := dialCensor(t, w, "tcp")
	if _, err := c.Write(esniHello(t)); err != nil {
		t.Fatal(err)
	}
	w.waitEntry(10*time.Second, "the ESNI hello dropped", func(e censor.LogEntry) bool {
		c.Close() // the flow is logged when it ends
		return e.Rule == "esni" && e.Action == censor.Drop && e.BytesUp == 0
	})
}

// esniHello is the captured Chromium ClientHello with an
// encrypted_server_name extension (0xffce) added.
func esniHello(t *testing.T) []byte {
	b, err := os.ReadFile("../../censor/testdata/chromium-hello.bin")
	if err != nil {
		t.Fatal(err)
	}
	h, err := censor.ParseClientHello(b)
	if err != nil {
		t.Fatal(err)
	}
	h.Extensions = append(h.Extensions, 0xffce)
	h.ExtensionData = append(h.ExtensionData, make([]byte, 40))
	out, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// exchangeHTTPSAlone: two new users whose link has only the https
// endpoint exchange n messages each way, and the censor stopped no flow
// to the https listener (or the proxy before it).
func exchangeHTTPSAlone(t *testing.T, w *world, n int) {
	if !slices.Contains(bin.transports, "https") {
		t.Logf("%s: the exchange over https alone is PENDING until the https transport lands", w.policy)
		return
	}
	a, b := pair(t, w, w.linkVia("", "https"), "-https")
	exchange(t, a, b, n, 1, nil)
	for _, e := range w.entries() {
		if e.Server == w.upstream["https"] && e.Action != censor.Pass && e.Action != "" {
			t.Errorf("an https flow was stopped: %s %s: %s", e.Rule, e.Action, e.Evidence)
		}
	}
	t.Logf("%s: %d messages each way over https alone arrived exactly once, in order; no https flow was stopped", w.policy, n)
}

// tlsTunnel reserves the addresses of the naive TLS tunnel of the
// tls-in-tls row and has the censor forward to its terminator.
func tlsTunnel(t *testing.T) worldConfig {
	a := &tunnelAddrs{wrapper: freePort(t, censorIP), censor: freePort(t, censorIP), terminator: freePort(t, relayIP)}
	return worldConfig{forwards: map[string]string{a.censor: a.terminator}, tunnel: a}
}

// controlTLSTunnel: the tcp transport inside a plain TLS tunnel (a
// wrapper on the client's side, a terminator on the relay's) is flagged by
// the tls-in-tls rule and stopped.
func controlTLSTunnel(t *testing.T, w *world) {
	a := w.cfg.tunnel
	startTLSTunnel(t, a, w.relayAt["tcp"])
	u := newUser(t, w, "tunnel", w.linkVia(a.wrapper, "tcp"))
	if _, _, code := u.tryRead(); code != 3 {
		t.Errorf("user through the naive TLS tunnel: exit %d, want 3 (unreachable)", code)
	}
	w.waitEntry(5*time.Second, "the tunnel dropped by tls-in-tls", func(e censor.LogEntry) bool {
		return e.Rule == "tls-in-tls" && e.Action == censor.Drop
	})
}
