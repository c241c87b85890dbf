package probe

import (
	"bytes"
	"context"
	"math"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ferry-im/ferry/censor"
	"github.com/ferry-im/ferry/monitor"
)

func TestHelloIsCensorCapture(t *testing.T) {
	want, err := os.ReadFile("../../censor/testdata/chromium-hello.bin")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(chromiumHello, want) {
		t.Fatal("monitor/probe/chromium-hello.bin differs from censor/testdata/chromium-hello.bin: copy the new capture")
	}
	h, err := browserHello("www.example.org", bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := censor.ParseClientHello(h)
	if err != nil {
		t.Fatal(err)
	}
	ja4, _ := os.ReadFile("../../censor/testdata/chromium-ja4.txt")
	if parsed.SNI != "www.example.org" || parsed.JA4()+"\n" != string(ja4) {
		t.Fatalf("rewritten hello: SNI %q, JA4 %s, want www.example.org and %s", parsed.SNI, parsed.JA4(), ja4)
	}
}

// probes are the two probes every trial test runs.
var probes = []struct {
	name string
	make func(tb *testbed, t *testing.T) monitor.Probe
}{
	{"text", func(tb *testbed, t *testing.T) monitor.Probe { return tb.textProbe(t) }},
	{"client", func(tb *testbed, t *testing.T) monitor.Probe { return tb.clientProbe(t) }},
}

// eachProbe runs f for each probe in a subtest; onlyText skips the
// client probe (ten times the cost under the race detector: two SQLite
// profiles) where it would check nothing the text probe does not.
func eachProbe(t *testing.T, f func(t *testing.T, mk func(tb *testbed, t *testing.T) monitor.Probe), onlyText ...bool) {
	for _, p := range probes {
		if p.name == "client" && len(onlyText) > 0 && onlyText[0] {
			continue
		}
		t.Run(p.name, func(t *testing.T) { f(t, p.make) })
	}
}

// trialUnder runs one trial and one control under policy.
func trialUnder(t *testing.T, mk func(tb *testbed, t *testing.T) monitor.Probe, policy string, seed uint64) (monitor.Trial, monitor.Control) {
	t.Helper()
	var tr monitor.Trial
	var ctl monitor.Control
	synctest.Test(t, func(t *testing.T) {
		tb := newTestbed(t)
		defer tb.close()
		p := mk(tb, t)
		if tr = p.Probe(t.Context()); !tr.OK {
			t.Fatalf("trial under open failed: %+v", tr)
		}
		tb.setPolicy(policy, seed)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		tr = p.Probe(ctx)
		ctl = tb.control(t).Control(ctx, true)
	})
	return tr, ctl
}

func TestProbeOpen(t *testing.T) {
	eachProbe(t, func(t *testing.T, mk func(tb *testbed, t *testing.T) monitor.Probe) {
		tr, ctl := trialUnder(t, mk, "open", 1)
		if !tr.OK || !ctl.OK {
			t.Fatalf("trial %+v, control %+v", tr, ctl)
		}
		var names []string
		for _, s := range tr.Steps {
			names = append(names, s.Name)
		}
		if n := len(names); n < 3 || names[0] != "send" || names[1] != "deliver" || names[n-1] != "receipt" {
			t.Errorf("steps %v, want send, deliver, ..., receipt", names)
		}
		if !tr.Transfer.Measured() || !ctl.Transfer.Measured() {
			t.Errorf("transfers not measured: probe %+v, control %+v", tr.Transfer, ctl.Transfer)
		}
	})
}

func TestProbeThrottled(t *testing.T) {
	eachProbe(t, func(t *testing.T, mk func(tb *testbed, t *testing.T) monitor.Probe) {
		tr, _ := trialUnder(t, mk, "throttle", 1)
		if !tr.OK {
			t.Fatalf("trial %s (%s)", tr.Summary(), tr.Detail)
		}
		r := tr.Transfer.Rate()
		if r < 140000/8*0.8 || r > 140000/8*1.25 {
			t.Fatalf("rate %s under a 140 kbit/s throttle", monitor.FormatRate(r))
		}
	}, true)
}

func TestProbeTLSGate(t *testing.T) {
	eachProbe(t, func(t *testing.T, mk func(tb *testbed, t *testing.T) monitor.Probe) {
		tr, ctl := trialUnder(t, mk, "tls-gate", 1)
		if tr.OK || tr.Stage != monitor.StageHandshake || tr.Failure != monitor.FailureConnReset {
			t.Errorf("trial under tls-gate: ok=%v stage=%s failure=%s (%s)", tr.OK, tr.Stage, tr.Failure, tr.Detail)
		}
		if !ctl.OK || ctl.Transfer.Measured() {
			t.Errorf("control under tls-gate: %+v; want the browser's hello to pass and Go's download to fail", ctl)
		}
	})
}

func TestProbeWhitelistDrops(t *testing.T) {
	eachProbe(t, func(t *testing.T, mk func(tb *testbed, t *testing.T) monitor.Probe) {
		tr, ctl := trialUnder(t, mk, "whitelist", 1)
		if tr.OK || tr.Stage != monitor.StageHandshake || tr.Failure != monitor.FailureTimeout {
			t.Errorf("trial under whitelist: ok=%v stage=%s failure=%s (%s)", tr.OK, tr.Stage, tr.Failure, tr.Detail)
		}
		if !ctl.OK || !ctl.Transfer.Measured() || !math.IsInf(ctl.Transfer.Rate(), 1) {
			t.Errorf("control under whitelist: %+v", ctl)
		}
	}, true)
}

func TestProbeForgottenAccount(t *testing.T) {
	eachProbe(t, func(t *testing.T, mk func(tb *testbed, t *testing.T) monitor.Probe) {
		// A relay that lost its data refuses the probe account: the trial
		// fails at auth, and the next one makes new accounts and succeeds.
		synctest.Test(t, func(t *testing.T) {
			tb := newTestbed(t)
			defer tb.close()
			p := mk(tb, t)
			if tr := p.Probe(t.Context()); !tr.OK {
				t.Fatalf("first trial: %+v", tr)
			}
			tb.startRelay()
			tr := p.Probe(t.Context())
			if tr.OK || tr.Stage != monitor.StageAuth || tr.Failure != monitor.FailureDenied {
				t.Fatalf("trial after the relay lost its data: ok=%v stage=%s failure=%s (%s)", tr.OK, tr.Stage, tr.Failure, tr.Detail)
			}
			if tr := p.Probe(t.Context()); !tr.OK {
				t.Fatalf("trial with new accounts: %+v", tr)
			}
		})
	})
}

func TestProbeRelayDown(t *testing.T) {
	eachProbe(t, func(t *testing.T, mk func(tb *testbed, t *testing.T) monitor.Probe) {
		synctest.Test(t, func(t *testing.T) {
			tb := newTestbed(t)
			defer tb.close()
			tb.mu.Lock()
			tb.stopRelay()
			tb.mu.Unlock()
			tr := mk(tb, t).Probe(t.Context())
			if tr.OK || tr.Stage != monitor.StageConnect || tr.Failure == "" {
				t.Fatalf("trial with the relay down: ok=%v stage=%s failure=%s (%s)", tr.OK, tr.Stage, tr.Failure, tr.Detail)
			}
		})
	}, true)
}

func TestTransportsUnderPolicies(t *testing.T) {
	// What each transport meets under the policies that tell them apart.
	tests := []struct {
		transport, policy string
		ok                bool
		stage             monitor.Stage
		failure           string
	}{
		{"https", "open", true, "", ""},
		{"obfs", "open", true, "", ""},
		{"https", "tls-gate", true, "", ""},
		{"obfs", "tls-gate", false, monitor.StageHandshake, monitor.FailureConnReset},
		{"https", "whitelist", true, "", ""},
		{"obfs", "whitelist", false, monitor.StageHandshake, monitor.FailureTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.transport+"/"+tt.policy, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tb := newTestbed(t)
				defer tb.close()
				tb.setPolicy(tt.policy, 1)
				tr := tb.textProbe(t, tt.transport).Probe(t.Context())
				if tr.OK != tt.ok || tr.Stage != tt.stage || tr.Failure != tt.failure {
					t.Fatalf("got ok=%v stage=%s failure=%s (%s), want ok=%v stage=%s failure=%s", tr.OK, tr.Stage, tr.Failure, tr.Detail, tt.ok, tt.stage, tt.failure)
				}
			})
		})
	}
}
