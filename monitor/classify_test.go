package monitor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var testCell = Cell{Vantage: "v", Relay: "r", Feature: FeatureText, Transport: "tcp"}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// synth returns a synthetic trial at time at, of the kind code names:
//
//	o  success, controls pass, transfer as fast as the control's
//	t  success with a transfer held at 17.5 kB/s (140 kbit/s) against a 5 MB/s control
//	s  success with a slow transfer of a random rate between 2% and 20% of the control's
//	r  failed at handshake with connection_reset, controls pass
//	d  failed at handshake with generic_timeout_error, controls pass
//	x  failed with connection_reset while the controls failed too (an outage)
//	a  failed at auth (the relay refused the account)
//	c  failed at connect with connection_refused
//	l  failed locally (disk full)
//	k  success while the control was unreachable (connect refused)
//	u  failed at handshake with generic_timeout_error, the control unreachable
//	h  as u, but https to the same relay worked at the same time
//	n  failed at handshake with generic_timeout_error, no control taken
func synth(code byte, at time.Time, rnd *rand.Rand) *Trial {
	const control = 5e6
	ctl := func(ok bool) *Control {
		c := &Control{Target: "ref", Outcome: Outcome{Start: at, OK: ok, Transfer: Transfer{Bytes: 5e6, Time: time.Second}}}
		if !ok {
			c.Stage, c.Failure, c.Transfer = StageTLS, FailureConnReset, Transfer{}
		}
		return c
	}
	t := &Trial{Cell: testCell, Outcome: Outcome{Start: at, Runtime: 2 * time.Second, OK: true}, Pre: ctl(true), Post: ctl(true)}
	switch code {
	case 'o':
		t.Transfer = Transfer{Bytes: 4.8e6, Time: time.Second}
	case 't':
		rate := 17500 * (1 + 0.05*(rnd.Float64()-0.5))
		t.Transfer = Transfer{Bytes: 30000, Time: time.Duration(30000 / rate * float64(time.Second))}
	case 's':
		rate := control * []float64{0.02, 0.08, 0.2, 0.05}[at.Unix()%4]
		t.Transfer = Transfer{Bytes: 30000, Time: time.Duration(30000 / rate * float64(time.Second))}
	case 'r':
		t.FailWith(StageHandshake, FailureConnReset, "read: connection reset by peer")
	case 'd':
		t.FailWith(StageHandshake, FailureTimeout, "i/o timeout")
	case 'x':
		t.FailWith(StageHandshake, FailureConnReset, "reset")
		t.Pre, t.Post = ctl(false), ctl(false)
	case 'a':
		t.FailWith(StageAuth, FailureDenied, "denied")
	case 'c':
		t.FailWith(StageConnect, FailureConnRefused, "connection refused")
	case 'l':
		t.FailWith(StageLocal, FailureLocal, "database or disk is full")
	case 'k', 'u', 'h':
		unreachable := func() *Control {
			c := &Control{Target: "ref", Outcome: Outcome{Start: at}}
			c.FailWith(StageConnect, FailureConnRefused, "dial tcp 93.184.215.14:443: connect: connection refused")
			return c
		}
		t.Pre, t.Post = unreachable(), unreachable()
		if code != 'k' {
			t.FailWith(StageHandshake, FailureTimeout, "i/o timeout")
		}
		if code == 'h' {
			t.Siblings = []Sibling{{Transport: "https", Feature: FeatureText, Start: at, OK: true}}
		}
	case 'n':
		t.FailWith(StageHandshake, FailureTimeout, "i/o timeout")
		t.Pre, t.Post = nil, nil
	default:
		panic("unknown trial code " + string(code))
	}
	return t
}

// stateCode is the one-letter code of a state in the tests' scripts.
var stateCode = map[State]byte{StateUnknown: 'U', StateOK: 'O', StateDegraded: 'D', StateThrottled: 'T', StateIntermittent: 'I', StateBlocked: 'B'}

// play feeds a script of trial codes, one every interval, and returns the
// state after each as a string of state codes, and the assessments.
func play(th Thresholds, script string, interval time.Duration) (string, []Assessment) {
	c := NewClassifier(testCell, th)
	rnd := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	var as []Assessment
	for i := range len(script) {
		if script[i] == ' ' {
			continue
		}
		a, _ := c.Observe(synth(script[i], epoch.Add(time.Duration(len(as))*interval), rnd))
		b.WriteByte(stateCode[a.State])
		as = append(as, a)
	}
	return b.String(), as
}

func TestClassifierScripts(t *testing.T) {
	tests := []struct {
		name   string
		script string
		want   string
		mech   Mechanism // of the last assessment
	}{
		{"ok after two trials", "oooo", "UOOO", MechNone},
		{"a block needs 30 s of failures", "oooo rrrr", "UOOO OOOB", MechReset},
		{"a short run of failures that ends is intermittent", "oooo rr oooo", "UOOO OO IIII", MechReset},
		{"one failure changes nothing", "oooo r oooo", "UOOO O OOOO", MechNone},
		{"drops then resets change the mechanism", "oo dddd rr", "UO OOOB BB", MechReset},
		{"a blocked cell stays blocked through a lone success", "oo dddd o ddd", "UO OOOB B BBB", MechDrop},
		{"three successes in ten end a block: intermittent", "oo rrrr ooo", "UO OOOB BBI", MechReset},
		{"a block ends in throttling", "oo rrrr ttt", "UO OOOB BBT", MechThrottle},
		{"throttle plateau", "oo ttt", "UO OTT", MechThrottle},
		{"throttled through a short outage of drops", "oo tttt dd tt", "UO OTTT TT TT", MechThrottle},
		{"the end of a throttle forgets its outages", "oo tttt dd tt oo", "UO OTTT TT TT OO", MechNone},
		{"slow but noisy is degraded, not throttled", "oo ssss", "UO OODD", MechNone},
		{"alternating is intermittent", "oooo rorror", "UOOO OOIIII", MechReset},
		{"network outage is not a block", "oo xxxxxx oo", "UO OIIIII II", MechReset},
		{"two lone failures are intermittent", "oooo rooor", "UOOO OOOOI", MechReset},
		{"refused accounts are unknown, never blocked", "oo aaaaaa", "UO OUUUUU", MechNone},
		{"relay down is unknown", "oo cccc", "UO OUUU", MechNone},
		{"local errors are unknown", "oo llll", "UO OUUU", MechNone},
		{"one local error changes nothing", "oo l oo", "UO O OO", MechNone},
		{"unknown until enough trials", "aao", "UUU", MechNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, as := play(Thresholds{}, tt.script, 10*time.Second)
			want := strings.ReplaceAll(tt.want, " ", "")
			if got != want {
				t.Errorf("states: got %s, want %s", got, want)
			}
			if m := as[len(as)-1].Mechanism; m != tt.mech {
				t.Errorf("mechanism: got %q, want %q", m, tt.mech)
			}
		})
	}
}

func TestClassifierQuiet(t *testing.T) {
	// An intermittent cell stays intermittent through up periods shorter
	// than Quiet, and is ok once a whole Quiet period passed without a
	// failure.
	th := Thresholds{Quiet: time.Minute}
	got, as := play(th, "oo rorr ooooo oo", 10*time.Second)
	if want := "UOOOIIIIIIIOO"; got != want {
		t.Fatalf("states: got %s, want %s", got, want)
	}
	last := as[len(as)-1]
	if want := epoch.Add(11 * 10 * time.Second); !last.Detected.Equal(want) {
		t.Errorf("ok detected at %v, want %v", last.Detected, want)
	}
}

func TestClassifierNetworkDown(t *testing.T) {
	// Controls that fail with the probe for NetworkDown make the cell
	// unknown, never blocked.
	got, _ := play(Thresholds{}, "oo"+strings.Repeat("x", 25), 10*time.Second)
	if strings.Contains(got, "B") {
		t.Fatalf("states %s: a network outage called a block", got)
	}
	if !strings.HasSuffix(got, "U") {
		t.Fatalf("states %s: want unknown after 3 minutes of failing controls", got)
	}
}

func TestClassifierSinceAndEvidence(t *testing.T) {
	_, as := play(Thresholds{}, "oooorrrr", 10*time.Second)
	a := as[len(as)-1]
	if a.State != StateBlocked || a.Mechanism != MechReset {
		t.Fatalf("got %s(%s), want blocked(reset)", a.State, a.Mechanism)
	}
	if want := epoch.Add(40 * time.Second); !a.Since.Equal(want) {
		t.Errorf("since %v, want the first failure at %v", a.Since, want)
	}
	if want := epoch.Add(70 * time.Second); !a.Detected.Equal(want) {
		t.Errorf("detected %v, want %v", a.Detected, want)
	}
	if !strings.Contains(a.Evidence, "handshake") || !strings.Contains(a.Evidence, FailureConnReset) {
		t.Errorf("evidence %q does not name the stage and failure", a.Evidence)
	}
	if a.Confidence < 0.75 || a.Confidence > 0.85 {
		t.Errorf("confidence %.2f after 4 agreeing trials, want 4/5", a.Confidence)
	}
}

func TestClassifierConfidence(t *testing.T) {
	tests := []struct {
		script string
		want   float64
	}{
		{"oo", 2.0 / 5},
		{"oooooooo", 1},
		{"oooorrrrrrrr", 1},
		{"ootttttt", 1},
		{"aaaa", 0},
	}
	for _, tt := range tests {
		_, as := play(Thresholds{}, tt.script, 10*time.Second)
		if got := as[len(as)-1].Confidence; math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("%s: confidence %.3f, want %.3f", tt.script, got, tt.want)
		}
	}
}

func TestClassifierNoBlockUnderSparseFailures(t *testing.T) {
	// Independent failures of 5% of trials (a flaky network) must not
	// read as a block over 10,000 trials.
	rnd := rand.New(rand.NewPCG(3, 4))
	var b strings.Builder
	for range 10000 {
		if rnd.Float64() < 0.05 {
			b.WriteByte('d')
		} else {
			b.WriteByte('o')
		}
	}
	got, _ := play(Thresholds{}, b.String(), 10*time.Second)
	if i := strings.IndexByte(got, 'B'); i >= 0 {
		t.Fatalf("blocked at trial %d under 5%% independent failures", i)
	}
}

func TestFailureStrings(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"eof", errEOF(), FailureEOF},
		{"reset", errReset(), FailureConnReset},
		{"refused", errRefused(), FailureConnRefused},
		{"deadline", errDeadline(), FailureTimeout},
		{"nxdomain", errNXDomain(), FailureDNSNXDomain},
		{"tls hostname", errHostname(), FailureSSLInvalidHostname},
		{"unknown", errPlain("strange"), FailureUnknownPrefix + "strange"},
	}
	for _, tt := range tests {
		if got := Failure(tt.err); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestClassifierControlEvidence(t *testing.T) {
	// A control that never passes says nothing: a transport that fails
	// every time is unknown, with the control's failure as evidence, never
	// intermittent or blocked; when another transport to the same relay
	// works meanwhile, it is blocked with less confidence; without a
	// control, the evidence never claims one.
	tests := []struct {
		name       string
		script     string
		want       string // the last state, with its mechanism
		confidence float64
		evidence   []string // the last evidence holds each
		never      string   // states that must not appear
		notIn      string   // the last evidence must not hold it
	}{
		{"control unreachable, probe fails", strings.Repeat("u", 20), "unknown()", 0,
			[]string{"control unreachable: connect connection_refused", "handshake", FailureTimeout}, "IB", "controls passed"},
		{"control unreachable, probe works then fails", "kkkk" + strings.Repeat("u", 16), "unknown()", 0,
			[]string{"control unreachable: connect"}, "IB", "controls passed"},
		{"control unreachable but https works", strings.Repeat("h", 20), "blocked(drop)", 0.75,
			[]string{"control unreachable: connect connection_refused", "https to the same relay worked"}, "I", "controls passed"},
		{"no control", strings.Repeat("n", 20), "blocked(drop)", 0.5,
			[]string{"no control taken"}, "I", "controls passed"},
		{"controls passed", strings.Repeat("d", 20), "blocked(drop)", 1,
			[]string{"while the controls passed"}, "I", "unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, as := play(Thresholds{}, tt.script, 10*time.Second)
			last := as[len(as)-1]
			if v := fmt.Sprintf("%s(%s)", last.State, last.Mechanism); v != tt.want {
				t.Errorf("got %s, want %s (states %s)", v, tt.want, got)
			}
			if strings.ContainsAny(got, tt.never) {
				t.Errorf("states %s hold one of %q", got, tt.never)
			}
			if math.Abs(last.Confidence-tt.confidence) > 1e-9 {
				t.Errorf("confidence %.3f, want %.3f", last.Confidence, tt.confidence)
			}
			for _, e := range tt.evidence {
				if !strings.Contains(last.Evidence, e) {
					t.Errorf("evidence %q does not say %q", last.Evidence, e)
				}
			}
			if strings.Contains(last.Evidence, tt.notIn) {
				t.Errorf("evidence %q says %q", last.Evidence, tt.notIn)
			}
		})
	}
}
