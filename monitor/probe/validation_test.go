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

// phase is one policy of the validation, with what a right monitor says
// of tcp's text cell under it.
type phase struct {
	policy string
	length time.Duration
	state  monitor.State
	mech   monitor.Mechanism
}

// record is one trial of the validation with the assessment it led to and
// the phase it started in.
type record struct {
	trial monitor.Trial
	a     monitor.Assessment
	phase int
}

type recordSink struct {
	mu      sync.Mutex
	records []record
	phase   func() int
}

func (s *recordSink) Trial(_ context.Context, t *monitor.Trial, a monitor.Assessment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = append(s.records, record{trial: *t, a: a, phase: s.phase()})
}

func (s *recordSink) Change(context.Context, *monitor.Event, monitor.Event) {}

// TestPolicyChanges runs the monitor (a TextProbe over tcp with its
// controls) against the censor testbed while the policy changes:
// open, whatsapp-2017-09, fet-2021, tls-gate, intermittent, open. It
// checks, on the testbed's clock: at least 95% of trials are followed by
// the right state and mechanism; each change is detected within a minute
// of the censor's first action under the new policy (the return to open
// within the classifier's quiet period: see docs/monitor.md); and no trial
// under open reads as blocked, over at least 1,000 trials.
func TestPolicyChanges(t *testing.T) {
	scale := *validationScale
	d := func(m float64) time.Duration { return time.Duration(m * scale * float64(time.Minute)) }
	phases := []phase{
		{"open", d(45), monitor.StateOK, monitor.MechNone},
		{"whatsapp-2017-09", d(30), monitor.StateThrottled, monitor.MechThrottle},
		{"fet-2021", d(30), monitor.StateBlocked, monitor.MechDrop},
		{"tls-gate", d(30), monitor.StateBlocked, monitor.MechReset},
		{"intermittent", d(30), monitor.StateIntermittent, monitor.MechReset},
		{"open", d(45), monitor.StateOK, monitor.MechNone},
	}
	var records []record
	var starts, acts []time.Time
	th := monitor.Thresholds{}
	synctest.Test(t, func(t *testing.T) {
		tb := newTestbed(t)
		defer tb.close()
		var mu sync.Mutex
		cur := 0
		sink := &recordSink{phase: func() int { mu.Lock(); defer mu.Unlock(); return cur }}
		r, err := monitor.NewRunner(monitor.Config{
			Targets: []monitor.Target{{
				Cell:     monitor.Cell{Vantage: "testbed", Relay: relayAddr, Feature: monitor.FeatureText, Transport: "tcp"},
				Endpoint: "tcp=" + relayAddr, Probe: tb.textProbe(t), Control: tb.control(t),
			}},
			Interval: 5 * time.Second, Thresholds: th, Sinks: []monitor.Sink{sink},
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
				acts = append(acts, tb.firstAction())
			}
			mu.Lock()
			cur = i
			mu.Unlock()
			tb.setPolicy(p.policy, uint64(10+i))
			starts = append(starts, time.Now())
			time.Sleep(p.length)
		}
		acts = append(acts, tb.firstAction())
		cancel()
		<-done
		records = sink.records
	})
	checkValidation(t, phases, records, starts, acts, th)
}

func checkValidation(t *testing.T, phases []phase, records []record, starts, acts []time.Time, th monitor.Thresholds) {
	right, openTrials, openBlocked := 0, 0, 0
	wrong := map[string]int{}
	for _, rc := range records {
		p := phases[rc.phase]
		if rc.a.State == p.state && rc.a.Mechanism == p.mech {
			right++
		} else {
			wrong[fmt.Sprintf("%s: %s(%s)", p.policy, rc.a.State, rc.a.Mechanism)]++
		}
		if p.policy == "open" {
			openTrials++
			if rc.a.State == monitor.StateBlocked {
				openBlocked++
			}
		}
	}
	share := float64(right) / float64(len(records))
	t.Logf("%d trials, %.1f%% right; wrong: %v", len(records), 100*share, wrong)
	if share < 0.95 {
		t.Errorf("right state and mechanism for %.1f%% of trials, want at least 95%%", 100*share)
	}
	if openBlocked > 0 || openTrials < 1000 && *validationScale >= 1 {
		t.Errorf("%d of %d trials under open read as blocked; want none of at least 1,000", openBlocked, openTrials)
	}
	for i := 1; i < len(phases); i++ {
		from := starts[i]
		if !acts[i-1].IsZero() && acts[i-1].After(from) {
			from = acts[i-1] // the censor had not acted yet (the outage schedule starts up)
		}
		var at time.Time
		for _, rc := range records {
			if rc.phase == i && !rc.a.Updated.Before(from) && rc.a.State == phases[i].state && rc.a.Mechanism == phases[i].mech {
				at = rc.a.Updated
				break
			}
		}
		limit := time.Minute
		if phases[i-1].state == monitor.StateIntermittent {
			limit = orQuiet(th) + time.Minute
		}
		took := at.Sub(from)
		t.Logf("%s -> %s: detected after %v (limit %v)", phases[i-1].policy, phases[i].policy, took.Round(time.Second), limit)
		if at.IsZero() || took > limit {
			t.Errorf("%s -> %s: detected after %v, want within %v", phases[i-1].policy, phases[i].policy, took, limit)
		}
	}
	if testing.Verbose() {
		var b strings.Builder
		for _, rc := range records {
			fmt.Fprintf(&b, "%s %-16s %-40s %s(%s)\n", rc.trial.Start.Format("15:04:05"), phases[rc.phase].policy, rc.trial.Summary(), rc.a.State, rc.a.Mechanism)
		}
		t.Log("\n" + b.String())
	}
}

func orQuiet(th monitor.Thresholds) time.Duration {
	if th.Quiet > 0 {
		return th.Quiet
	}
	return 6 * time.Minute
}
