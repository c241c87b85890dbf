package probe

import (
	"context"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ferry-im/ferry/monitor"
)

var validationScale = flag.Float64("validation-scale", 1, "scale the phases of TestPolicyChanges (0.2 for a quick look)")

// verdict is a state with its mechanism.
type verdict struct {
	state monitor.State
	mech  monitor.Mechanism
}

func (v verdict) String() string { return fmt.Sprintf("%s(%s)", v.state, v.mech) }

// phase is one policy of a validation, with what a right monitor says of
// each transport's text cell under it.
type phase struct {
	policy string
	length time.Duration
	want   map[string]verdict
}

var (
	ok           = verdict{monitor.StateOK, monitor.MechNone}
	throttled    = verdict{monitor.StateThrottled, monitor.MechThrottle}
	dropped      = verdict{monitor.StateBlocked, monitor.MechDrop}
	reset        = verdict{monitor.StateBlocked, monitor.MechReset}
	intermittent = verdict{monitor.StateIntermittent, monitor.MechReset}
)

// record is one trial of the validation with the assessment it led to and
// the phase it started in.
type record struct {
	trial monitor.Trial
	a     monitor.Assessment
	phase int
}

type recordSink struct {
	mu      sync.Mutex
	records map[string][]record // by transport
	phase   func() int
}

func (s *recordSink) Trial(_ context.Context, t *monitor.Trial, a monitor.Assessment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[t.Transport] = append(s.records[t.Transport], record{trial: *t, a: a, phase: s.phase()})
}

func (s *recordSink) Change(context.Context, *monitor.Event, monitor.Event) {}

// run is what a validation run observed.
type run struct {
	records map[string][]record
	starts  []time.Time // when each phase began
	acts    []time.Time // when the censor first acted in each phase (zero if never)
}

// playPhases runs the monitor, one text cell per transport with its
// controls, against the censor testbed while the policy goes through
// phases, every trial interval apart (on the testbed's clock).
func playPhases(t *testing.T, transports []string, phases []phase, interval time.Duration, th monitor.Thresholds) run {
	var res run
	synctest.Test(t, func(t *testing.T) {
		tb := newTestbed(t)
		defer tb.close()
		var mu sync.Mutex
		cur := 0
		sink := &recordSink{records: map[string][]record{}, phase: func() int { mu.Lock(); defer mu.Unlock(); return cur }}
		var targets []monitor.Target
		for _, name := range transports {
			ep := tb.link1(name).Endpoints[0]
			targets = append(targets, monitor.Target{
				Cell:     monitor.Cell{Vantage: "testbed", Relay: relayAddr, Feature: monitor.FeatureText, Transport: name},
				Endpoint: name + "=" + ep.Addr, Probe: tb.textProbe(t, name), Control: tb.control(t),
			})
		}
		r, err := monitor.NewRunner(monitor.Config{
			Targets: targets, Interval: interval, Thresholds: th, Sinks: []monitor.Sink{sink},
			Rand: mrand.NewChaCha8([32]byte{1}),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); r.Run(ctx) }()
		for i, p := range phases {
			if i > 0 {
				res.acts = append(res.acts, tb.firstAction())
			}
			mu.Lock()
			cur = i
			mu.Unlock()
			tb.setPolicy(p.policy, uint64(10+i))
			res.starts = append(res.starts, time.Now())
			time.Sleep(p.length)
		}
		res.acts = append(res.acts, tb.firstAction())
		cancel()
		<-done
		res.records = sink.records
	})
	return res
}

// TestPolicyChanges runs the monitor (a TextProbe over tcp with its
// controls) against the censor testbed while the policy changes:
// open, whatsapp-2017-09, fet-2021, tls-gate, intermittent, open. It
// checks, on the testbed's clock: at least 95% of trials are followed by
// the right state and mechanism; each change is detected within a minute
// of the censor's first action under the new policy (the return to open
// within the classifier's quiet period: see docs/monitor.md); and no trial
// under open reads as blocked, over at least 1,000 trials.
func TestPolicyChanges(t *testing.T) {
	t.Parallel() // the two validations take a core each
	scale := *validationScale
	d := func(m float64) time.Duration { return time.Duration(m * scale * float64(time.Minute)) }
	phases := []phase{
		{"open", d(45), map[string]verdict{"tcp": ok}},
		{"whatsapp-2017-09", d(30), map[string]verdict{"tcp": throttled}},
		{"fet-2021", d(30), map[string]verdict{"tcp": dropped}},
		{"tls-gate", d(30), map[string]verdict{"tcp": reset}},
		{"intermittent", d(30), map[string]verdict{"tcp": intermittent}},
		{"open", d(45), map[string]verdict{"tcp": ok}},
	}
	th := monitor.Thresholds{}
	res := playPhases(t, []string{"tcp"}, phases, 5*time.Second, th)
	checkValidation(t, "tcp", phases, res, th)
}

// TestPolicyChangesOtherTransports plays the same changes, shorter, for
// the disguised transports: https passes everything but the outages;
// obfs is throttled like tcp by whatsapp-2017-09 (its first packets are
// neither TLS nor HTTP), passes fet-2021 (they fall in an exemption) and
// is reset by tls-gate. It checks the state at the end of each phase,
// each change's detection, and that open never reads as blocked.
func TestPolicyChangesOtherTransports(t *testing.T) {
	t.Parallel()
	scale := *validationScale
	d := func(m float64) time.Duration { return time.Duration(m * scale * float64(time.Minute)) }
	phases := []phase{
		{"open", d(4), map[string]verdict{"https": ok, "obfs": ok}},
		{"whatsapp-2017-09", d(6), map[string]verdict{"https": ok, "obfs": throttled}},
		{"fet-2021", d(4), map[string]verdict{"https": ok, "obfs": ok}},
		{"tls-gate", d(4), map[string]verdict{"https": ok, "obfs": reset}},
		{"intermittent", d(14), map[string]verdict{"https": intermittent, "obfs": intermittent}},
		{"open", d(8), map[string]verdict{"https": ok, "obfs": ok}},
	}
	th := monitor.Thresholds{}
	res := playPhases(t, []string{"https", "obfs"}, phases, 10*time.Second, th)
	for _, name := range []string{"https", "obfs"} {
		recs := res.records[name]
		for i, p := range phases {
			var last *record
			for j := range recs {
				if recs[j].phase == i {
					last = &recs[j]
				}
				if recs[j].phase == i && p.policy == "open" && recs[j].a.State == monitor.StateBlocked {
					t.Errorf("%s under open read as blocked at %v", name, recs[j].trial.Start)
				}
			}
			if last == nil {
				t.Errorf("%s: no trial under %s", name, p.policy)
				continue
			}
			if got := (verdict{last.a.State, last.a.Mechanism}); got != p.want[name] {
				t.Errorf("%s at the end of %s: %v, want %v", name, p.policy, got, p.want[name])
			}
		}
		checkDetection(t, name, phases, res, th)
		dump(t, name, phases, recs)
	}
}

func checkValidation(t *testing.T, name string, phases []phase, res run, th monitor.Thresholds) {
	recs := res.records[name]
	right, openTrials, openBlocked := 0, 0, 0
	wrong := map[string]int{}
	for _, rc := range recs {
		p := phases[rc.phase]
		if got := (verdict{rc.a.State, rc.a.Mechanism}); got == p.want[name] {
			right++
		} else {
			wrong[p.policy+": "+got.String()]++
		}
		if p.policy == "open" {
			openTrials++
			if rc.a.State == monitor.StateBlocked {
				openBlocked++
			}
		}
	}
	share := float64(right) / float64(len(recs))
	t.Logf("%s: %d trials, %.1f%% right; wrong: %v; %d of %d trials under open read as blocked", name, len(recs), 100*share, wrong, openBlocked, openTrials)
	if share < 0.95 {
		t.Errorf("%s: right state and mechanism for %.1f%% of trials, want at least 95%%", name, 100*share)
	}
	if openBlocked > 0 || openTrials < 1000 && *validationScale >= 1 {
		t.Errorf("%s: %d of %d trials under open read as blocked; want none of at least 1,000", name, openBlocked, openTrials)
	}
	checkDetection(t, name, phases, res, th)
	dump(t, name, phases, recs)
}

// dump logs every trial with the assessment after it, with -v.
func dump(t *testing.T, name string, phases []phase, recs []record) {
	if !testing.Verbose() {
		return
	}
	var b strings.Builder
	for _, rc := range recs {
		fmt.Fprintf(&b, "%s %-6s %-16s %-45s %s(%s)\n", rc.trial.Start.Format("15:04:05"), name, phases[rc.phase].policy, rc.trial.Summary(), rc.a.State, rc.a.Mechanism)
	}
	t.Log("\n" + b.String())
}

// checkDetection checks that every change of what name should read is
// detected within a minute of the censor's first action in the new phase
// (of the phase's start when it never acted), or within the quiet period
// and a minute after intermittent.
func checkDetection(t *testing.T, name string, phases []phase, res run, th monitor.Thresholds) {
	for i := 1; i < len(phases); i++ {
		want, before := phases[i].want[name], phases[i-1].want[name]
		if want == before {
			continue
		}
		from := res.starts[i]
		if !res.acts[i].IsZero() && res.acts[i].After(from) {
			from = res.acts[i] // the censor had not acted yet (the outage schedule starts up)
		}
		var at time.Time
		for _, rc := range res.records[name] {
			if rc.phase == i && !rc.a.Updated.Before(from) && (verdict{rc.a.State, rc.a.Mechanism}) == want {
				at = rc.a.Updated
				break
			}
		}
		limit := time.Minute
		if before.state == monitor.StateIntermittent {
			limit = orQuiet(th) + time.Minute
		}
		took := at.Sub(from)
		t.Logf("%s: %s -> %s: detected after %v (limit %v)", name, phases[i-1].policy, phases[i].policy, took.Round(time.Second), limit)
		if at.IsZero() || took > limit {
			t.Errorf("%s: %s -> %s: detected after %v, want within %v", name, phases[i-1].policy, phases[i].policy, took, limit)
		}
	}
}

func orQuiet(th monitor.Thresholds) time.Duration {
	if th.Quiet > 0 {
		return th.Quiet
	}
	return 6 * time.Minute
}
