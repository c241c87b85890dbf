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
	records map[string][]record // by cell: feature/transport
	phase   func() int
}

func (s *recordSink) Trial(_ context.Context, t *monitor.Trial, a monitor.Assessment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := t.Feature + "/" + t.Transport
	s.records[k] = append(s.records[k], record{trial: *t, a: a, phase: s.phase()})
}

// cellSpec is a cell of a validation: a feature over a transport.
type cellSpec struct{ feature, transport string }

func (c cellSpec) String() string { return c.feature + "/" + c.transport }

// text returns the text cells of transports.
func text(transports ...string) []cellSpec {
	var cs []cellSpec
	for _, t := range transports {
		cs = append(cs, cellSpec{monitor.FeatureText, t})
	}
	return cs
}

func (s *recordSink) Change(context.Context, *monitor.Event, monitor.Event) {}

// run is what a validation run observed.
type run struct {
	records map[string][]record
	starts  []time.Time // when each phase began
	acts    []time.Time // when the censor first acted in each phase (zero if never)
}

// playPhases runs the monitor, one cell per spec with its controls,
// against the censor testbed while the policy goes through phases, every
// trial interval apart (on the testbed's clock). Media cells move
// testSizes.
func playPhases(t *testing.T, cells []cellSpec, phases []phase, interval time.Duration, th monitor.Thresholds) run {
	var res run
	synctest.Test(t, func(t *testing.T) {
		tb := newTestbed(t)
		defer tb.close()
		var mu sync.Mutex
		cur := 0
		sink := &recordSink{records: map[string][]record{}, phase: func() int { mu.Lock(); defer mu.Unlock(); return cur }}
		var targets []monitor.Target
		for _, c := range cells {
			name := c.transport
			ep := tb.link1(name).Endpoints[0]
			var p monitor.Probe = tb.textProbe(t, name)
			if c.feature != monitor.FeatureText {
				p = tb.mediaProbe(t, name, c.feature == monitor.FeatureMediaGet)
			}
			targets = append(targets, monitor.Target{
				Cell:     monitor.Cell{Vantage: "testbed", Relay: relayAddr, Feature: c.feature, Transport: name},
				Endpoint: name + "=" + ep.Addr, Probe: p, Control: tb.control(t),
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

// TestPolicyChanges runs the monitor against the censor testbed while the
// policy changes: open, whatsapp-2017-09, fet-2021, tls-gate,
// intermittent, open, with three cells over tcp: text (a TextProbe),
// media_put and media_get (MediaProbes of small attachments), each with
// its controls. It checks, on the testbed's clock, for each cell: at
// least 95% of trials are followed by the right state and mechanism; each
// change is detected within a minute of the censor's first action under
// the new policy (the return to open from intermittent within the
// classifier's quiet period: see docs/monitor.md); and no trial under
// open reads as blocked, over at least 1,000 trials (text). It then
// replays the same trials through a classifier with a 50-second quiet
// period and checks that every change, the return from intermittent
// too, is detected within a minute, that open never reads as blocked and
// does not flap; it logs what that costs in accuracy (docs/monitor.md
// section 11).
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
	cells := []cellSpec{{monitor.FeatureText, "tcp"}, {monitor.FeatureMediaPut, "tcp"}, {monitor.FeatureMediaGet, "tcp"}}
	res := playPhases(t, cells, phases, 5*time.Second, th)
	for _, c := range cells {
		checkValidation(t, c, phases, res, th, c.feature == monitor.FeatureText)
	}
	// A quiet period of 50 s: the return to open shows within a minute
	// (50 s and the next trial), at the cost of the intermittent phase's
	// up periods longer than that, which read ok.
	quick := monitor.Thresholds{Quiet: 50 * time.Second}
	for _, c := range cells {
		recs := replay(res.records[c.String()], quick)
		share, _, wrong := accuracy(c, phases, recs)
		t.Logf("%s with Quiet %v: %.1f%% right; wrong: %v", c, quick.Quiet, 100*share, wrong)
		checkNoOpenBlock(t, c, phases, recs, false)
		checkNoFlapping(t, c, phases, recs)
		checkDetection(t, c, phases, run{records: map[string][]record{c.String(): recs}, starts: res.starts, acts: res.acts}, quick, time.Minute)
	}
}

// checkNoFlapping checks that, under open, a cell changes state at most
// once (to ok) after the censor's earlier policy wears off.
func checkNoFlapping(t *testing.T, c cellSpec, phases []phase, recs []record) {
	for i, p := range phases {
		if p.policy != "open" {
			continue
		}
		var changes []string
		var prev *record
		for j := range recs {
			rc := &recs[j]
			if rc.phase != i {
				continue
			}
			if prev != nil && (verdict{rc.a.State, rc.a.Mechanism}) != (verdict{prev.a.State, prev.a.Mechanism}) {
				changes = append(changes, fmt.Sprintf("%s at %s", verdict{rc.a.State, rc.a.Mechanism}, rc.trial.Start.Format("15:04:05")))
			}
			prev = rc
		}
		if len(changes) > 1 {
			t.Errorf("%s under open (phase %d) changed state %d times: %v", c, i, len(changes), changes)
		}
	}
}

// replay classifies recorded trials afresh under th.
func replay(recs []record, th monitor.Thresholds) []record {
	if len(recs) == 0 {
		return nil
	}
	cls := monitor.NewClassifier(recs[0].trial.Cell, th)
	out := make([]record, len(recs))
	for i, rc := range recs {
		a, _ := cls.Observe(&rc.trial)
		out[i] = record{trial: rc.trial, a: a, phase: rc.phase}
	}
	return out
}

// TestPolicyChangesOtherTransports plays the same changes, shorter, for
// the disguised transports (text over both, media_put over obfs,
// media_get over https): https passes everything but the outages;
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
	cells := append(text("https", "obfs"), cellSpec{monitor.FeatureMediaPut, "obfs"}, cellSpec{monitor.FeatureMediaGet, "https"})
	res := playPhases(t, cells, phases, 10*time.Second, th)
	for _, c := range cells {
		name := c.transport
		recs := res.records[c.String()]
		for i, p := range phases {
			var last *record
			for j := range recs {
				if recs[j].phase == i {
					last = &recs[j]
				}
				if recs[j].phase == i && p.policy == "open" && recs[j].a.State == monitor.StateBlocked {
					t.Errorf("%s under open read as blocked at %v", c, recs[j].trial.Start)
				}
			}
			if last == nil {
				t.Errorf("%s: no trial under %s", c, p.policy)
				continue
			}
			if got := (verdict{last.a.State, last.a.Mechanism}); got != p.want[name] {
				t.Errorf("%s at the end of %s: %v, want %v", c, p.policy, got, p.want[name])
			}
		}
		checkDetection(t, c, phases, res, th, 0)
		dump(t, c, phases, recs)
	}
}

// accuracy returns the share of recs followed by the right state and
// mechanism, and what the others read, by phase.
func accuracy(c cellSpec, phases []phase, recs []record) (float64, int, map[string]int) {
	right := 0
	wrong := map[string]int{}
	for _, rc := range recs {
		p := phases[rc.phase]
		if got := (verdict{rc.a.State, rc.a.Mechanism}); got == p.want[c.transport] {
			right++
		} else {
			wrong[p.policy+": "+got.String()]++
		}
	}
	if len(recs) == 0 {
		return 0, 0, wrong
	}
	return float64(right) / float64(len(recs)), right, wrong
}

// checkNoOpenBlock checks that no trial under open reads as blocked, and,
// with many, that there were at least 1,000 of them.
func checkNoOpenBlock(t *testing.T, c cellSpec, phases []phase, recs []record, many bool) {
	openTrials, openBlocked := 0, 0
	for _, rc := range recs {
		if phases[rc.phase].policy == "open" {
			openTrials++
			if rc.a.State == monitor.StateBlocked {
				openBlocked++
			}
		}
	}
	t.Logf("%s: %d of %d trials under open read as blocked", c, openBlocked, openTrials)
	if openBlocked > 0 || many && openTrials < 1000 && *validationScale >= 1 {
		t.Errorf("%s: %d of %d trials under open read as blocked; want none (of at least 1,000)", c, openBlocked, openTrials)
	}
}

func checkValidation(t *testing.T, c cellSpec, phases []phase, res run, th monitor.Thresholds, many bool) {
	recs := res.records[c.String()]
	share, right, wrong := accuracy(c, phases, recs)
	t.Logf("%s: %d trials, %d right: %.1f%%; wrong: %v", c, len(recs), right, 100*share, wrong)
	if share < 0.95 {
		t.Errorf("%s: right state and mechanism for %.1f%% of trials, want at least 95%%", c, 100*share)
	}
	checkNoOpenBlock(t, c, phases, recs, many)
	checkDetection(t, c, phases, res, th, 0)
	dump(t, c, phases, recs)
}

// dump logs every trial with the assessment after it, with -v.
func dump(t *testing.T, c cellSpec, phases []phase, recs []record) {
	if !testing.Verbose() {
		return
	}
	var b strings.Builder
	for _, rc := range recs {
		fmt.Fprintf(&b, "%s %-14s %-16s %-45s %s(%s)\n", rc.trial.Start.Format("15:04:05"), c, phases[rc.phase].policy, rc.trial.Summary(), rc.a.State, rc.a.Mechanism)
	}
	t.Log("\n" + b.String())
}

// checkDetection checks that every change of what cell c should read is
// detected within limit (a minute when zero) of the censor's first action
// in the new phase (of the phase's start when it never acted); with a zero
// limit, the return from intermittent within the quiet period and a
// minute.
func checkDetection(t *testing.T, c cellSpec, phases []phase, res run, th monitor.Thresholds, limit time.Duration) {
	name := c.transport
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
		for _, rc := range res.records[c.String()] {
			if rc.phase == i && !rc.a.Updated.Before(from) && (verdict{rc.a.State, rc.a.Mechanism}) == want {
				at = rc.a.Updated
				break
			}
		}
		lim := limit
		if lim == 0 {
			lim = time.Minute
			if before.state == monitor.StateIntermittent {
				lim = orQuiet(th) + time.Minute
			}
		}
		took := at.Sub(from)
		t.Logf("%s (Quiet %v): %s -> %s: detected after %v (limit %v)", c, orQuiet(th), phases[i-1].policy, phases[i].policy, took.Round(time.Second), lim)
		if at.IsZero() || took > lim {
			t.Errorf("%s (Quiet %v): %s -> %s: detected after %v, want within %v", c, orQuiet(th), phases[i-1].policy, phases[i].policy, took, lim)
		}
	}
}

func orQuiet(th monitor.Thresholds) time.Duration {
	if th.Quiet > 0 {
		return th.Quiet
	}
	return 6 * time.Minute
}
