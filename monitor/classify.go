package monitor

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Thresholds tune the classifier. The zero value takes the defaults given
// on each field; docs/monitor.md explains how they were chosen.
type Thresholds struct {
	// Window is how many recent trials the rates are computed over.
	// Default 20.
	Window int
	// MinTrials is how many trials that say something of the network a
	// cell needs before it leaves unknown. Default 2.
	MinTrials int
	// BlockTrials and BlockAfter: a run of at least BlockTrials failures
	// with passing controls, spanning at least BlockAfter, makes a cell
	// blocked. Defaults 3 and 30 s. (A shorter span would call the
	// outages of a throttling censor blocks; a longer one detects a block
	// later.)
	BlockTrials int
	BlockAfter  time.Duration
	// Unblock: a blocked cell stops being blocked when Unblock of the
	// last UnblockWindow trials since the block began succeeded. Defaults
	// 3 and 10 (two successes in a row are common under a probabilistic
	// block such as fet-2021's once its residual block ends).
	Unblock       int
	UnblockWindow int
	// IntermittentBelow: a cell whose window holds a run of two failures
	// or more (it went down for a while), or two separate runs of
	// failures and a success rate below this, is intermittent (unless it
	// is blocked). Default 0.8.
	IntermittentBelow float64
	// Quiet is how long an intermittent (or formerly blocked) cell must go
	// without a failure to be ok again: longer than the censor's longest
	// up period, or every up period would read as "ok". Default 6 min
	// (the shipped intermittent policy's up periods last up to 5 min).
	Quiet time.Duration
	// ThrottleRatio, ThrottleSpread and ThrottleTrials: the last
	// ThrottleTrials measured transfers, each below ThrottleRatio of the
	// control's rate and within ThrottleSpread of each other (a plateau),
	// make a cell throttled; it stays throttled until a transfer reaches
	// twice ThrottleRatio. Defaults 0.25, 0.25 and 2.
	ThrottleRatio  float64
	ThrottleSpread float64
	ThrottleTrials int
	// DegradedRatio and SlowRuntime: a cell whose successful trials'
	// median transfer ratio is below DegradedRatio, or whose median
	// runtime is above SlowRuntime, is degraded. Defaults 0.5 and 60 s.
	DegradedRatio float64
	SlowRuntime   time.Duration
	// NetworkDown: when the controls fail with the probe for this long,
	// the cell is unknown (the network is down, not Ferry). Default 3 min.
	NetworkDown time.Duration
	// OtherTrials: this many trials in a row that fail the way a censor
	// does not (relay down, wrong link, forgotten account, local errors)
	// make the cell unknown. Default 2.
	OtherTrials int
}

// withDefaults returns th with every zero field set to its default.
func (th Thresholds) withDefaults() Thresholds {
	setInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	setF := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	setD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	setInt(&th.Window, 20)
	setInt(&th.MinTrials, 2)
	setInt(&th.BlockTrials, 3)
	setD(&th.BlockAfter, 30*time.Second)
	setInt(&th.Unblock, 3)
	setInt(&th.UnblockWindow, 10)
	setF(&th.IntermittentBelow, 0.8)
	setD(&th.Quiet, 6*time.Minute)
	setF(&th.ThrottleRatio, 0.25)
	setF(&th.ThrottleSpread, 0.25)
	setInt(&th.ThrottleTrials, 2)
	setF(&th.DegradedRatio, 0.5)
	setD(&th.SlowRuntime, time.Minute)
	setD(&th.NetworkDown, 3*time.Minute)
	setInt(&th.OtherTrials, 2)
	return th
}

// sample is what the classifier keeps of one trial.
type sample struct {
	start   time.Time
	out     outcome
	mech    Mechanism
	stage   Stage
	failure string
	runtime time.Duration
	rate    float64 // the probe's sustained rate, 0 if not measured
	ratio   float64 // rate over the control's; NaN if either is missing
	detail  string

	basis   basis    // what a failure's verdict rests on
	ctlOK   bool     // a control was taken and every control passed
	ctlFail string   // how a failed control failed, or ""
	sibling *Sibling // the latest sibling that reached the relay, or nil
}

func newSample(t *Trial) sample {
	out, mech := t.classify()
	s := sample{start: t.Start, out: out, mech: mech, stage: t.Stage, failure: t.Failure, runtime: t.Runtime, ratio: math.NaN(), detail: t.Detail,
		basis: t.basis(), ctlOK: t.controlsTaken() && t.controlsOK(), ctlFail: t.controlFailure()}
	if sib := t.siblingOK(); sib != nil {
		cp := *sib
		s.sibling = &cp
	}
	if t.OK && t.Transfer.Measured() {
		s.rate = t.Transfer.Rate()
		if c := t.controlRate(); c > 0 {
			switch {
			case math.IsInf(c, 1) && math.IsInf(s.rate, 1):
				s.ratio = 1
			default:
				s.ratio = s.rate / c // +Inf/finite is +Inf, finite/+Inf is 0
			}
		}
	}
	return s
}

// Classifier turns the trials of one cell, in order, into its state. It
// is not safe for concurrent use.
type Classifier struct {
	th     Thresholds
	cur    Assessment
	window []sample

	blockRun    []sample  // trials failed with passing controls since the last success
	lastFailure time.Time // latest blocked or outage trial
	downSince   time.Time // first of the current run of outage trials
	otherRun    []sample  // trials in a row that failed for reasons a censor does not cause
	// forgetBefore: failures before it do not count for intermittency.
	// A throttle that ends starts a new regime: the outages a throttling
	// censor adds belong to it.
	forgetBefore time.Time
}

// NewClassifier returns a classifier for cell, in state unknown.
func NewClassifier(cell Cell, th Thresholds) *Classifier {
	return &Classifier{th: th.withDefaults(), cur: Assessment{Cell: cell, State: StateUnknown, Evidence: "no trials yet"}}
}

// Current returns the cell's current assessment.
func (c *Classifier) Current() Assessment { return c.cur }

// Observe adds a trial (trials must come in order of their start) and
// returns the new assessment, and whether the state or mechanism changed.
func (c *Classifier) Observe(t *Trial) (Assessment, bool) {
	s := newSample(t)
	c.window = append(c.window, s)
	if len(c.window) > c.th.Window {
		c.window = slices.Delete(c.window, 0, len(c.window)-c.th.Window)
	}
	c.track(s)
	next := c.decide(s)
	next.Cell = c.cur.Cell
	next.Updated = s.start
	next.Trials, next.SuccessRate = c.successRate(c.window)
	changed := next.State != c.cur.State || next.Mechanism != c.cur.Mechanism
	if changed {
		next.Detected = s.start
		if next.Since.IsZero() || next.Since.After(s.start) {
			next.Since = s.start
		}
		if !c.cur.Since.IsZero() && next.Since.Before(c.cur.Since) {
			next.Since = c.cur.Since // events never overlap
		}
	} else {
		next.Since, next.Detected = c.cur.Since, c.cur.Detected
		if next.Since.IsZero() { // the first trial
			next.Since, next.Detected = s.start, s.start
		}
	}
	next.Confidence = c.confidence(next)
	c.cur = next
	return next, changed
}

// track updates the runs the rules look at.
func (c *Classifier) track(s sample) {
	switch s.out {
	case outcomeOK:
		c.blockRun, c.otherRun, c.downSince = nil, nil, time.Time{}
	case outcomeBlocked:
		c.blockRun = append(c.blockRun, s)
		c.otherRun, c.downSince, c.lastFailure = nil, time.Time{}, s.start
	case outcomeOutage:
		// Neutral for a block run: the network failed, not only Ferry.
		c.otherRun, c.lastFailure = nil, s.start
		if c.downSince.IsZero() {
			c.downSince = s.start
		}
	case outcomeOther:
		c.otherRun = append(c.otherRun, s)
	}
}

// decide applies the rules in order of precedence.
func (c *Classifier) decide(s sample) Assessment {
	if a, ok := c.unknown(s); ok {
		return a
	}
	if a, ok := c.blocked(s); ok {
		return a
	}
	if a, ok := c.throttled(); ok {
		return a
	}
	if a, ok := c.intermittent(s); ok {
		return a
	}
	return c.okOrDegraded()
}

func (c *Classifier) unknown(s sample) (Assessment, bool) {
	if n := len(c.otherRun); n >= c.th.OtherTrials {
		last := c.otherRun[n-1]
		return Assessment{State: StateUnknown, Since: c.otherRun[0].start, Evidence: fmt.Sprintf(
			"%d trials in a row failed at %s with %s, which a censor does not cause: %s", n, last.stage, last.failure, otherHint(last))}, true
	}
	if !c.downSince.IsZero() && !c.controlPassed() {
		// The control has not passed once in the window: it is
		// unreachable from here in its own right, and the probe's
		// failures cannot be told from a network that is down.
		return Assessment{State: StateUnknown, Since: c.downSince, Evidence: fmt.Sprintf(
			"control unreachable: %s; the probe failed at %s with %s and no other transport reached the relay, so a block cannot be told from a network that is down: give a --control that this vantage can reach",
			s.ctlFail, s.stage, s.failure)}, true
	}
	if !c.downSince.IsZero() && s.start.Sub(c.downSince) >= c.th.NetworkDown {
		return Assessment{State: StateUnknown, Since: c.downSince, Evidence: fmt.Sprintf(
			"the controls have failed with the probe since %s (%s), and no other transport reached the relay: the network is down, for Ferry and the reference site alike", c.downSince.UTC().Format(time.RFC3339), s.ctlFail)}, true
	}
	if n, _ := c.successRate(c.window); n < c.th.MinTrials {
		return Assessment{State: StateUnknown, Evidence: fmt.Sprintf("%d trials so far that say something of the network; %d needed", n, c.th.MinTrials)}, true
	}
	return Assessment{}, false
}

// otherHint says what to check for a failure a censor does not cause.
func otherHint(s sample) string {
	switch {
	case s.stage == StageLocal:
		return "the monitor's own machine failed (" + s.detail + ")"
	case s.stage == StageAuth:
		return "the relay refused the probe account (it may have lost its data); the monitor makes new probe accounts"
	case s.stage == StageDNS:
		return "the relay's name does not resolve: check the link"
	case s.stage == StageConnect:
		return "the relay does not answer at its address: it may be down, or its address blocked (compare with a monitor outside the network)"
	case s.failure == FailureRelay:
		return "the relay refused the request (" + s.detail + "): a relay without a blob store refuses attachments"
	case s.stage == StageHandshake && s.failure == FailureEOF:
		return "the relay closed the handshake: check the link's relay key"
	}
	return "see the trials' details"
}

func (c *Classifier) blocked(s sample) (Assessment, bool) {
	if c.cur.State == StateBlocked {
		var since []sample
		for _, w := range c.window {
			if !w.start.Before(c.cur.Since) {
				since = append(since, w)
			}
		}
		ok := 0
		for _, w := range since[max(0, len(since)-c.th.UnblockWindow):] {
			if w.out == outcomeOK {
				ok++
			}
		}
		if ok < c.th.Unblock {
			return c.blockedAssessment(), true
		}
		return Assessment{}, false
	}
	n := len(c.blockRun)
	if n >= c.th.BlockTrials && s.start.Sub(c.blockRun[0].start) >= c.th.BlockAfter {
		return c.blockedAssessment(), true
	}
	return Assessment{}, false
}

func (c *Classifier) blockedAssessment() Assessment {
	failed := c.blockRun
	if len(failed) == 0 { // still blocked through a success or an outage
		for _, s := range c.window {
			if s.out == outcomeBlocked {
				failed = append(failed, s)
			}
		}
	}
	if len(failed) == 0 {
		return Assessment{State: StateBlocked, Mechanism: c.cur.Mechanism, Since: c.cur.Since, Evidence: c.cur.Evidence}
	}
	mech := dominant(failed[max(0, len(failed)-2):])
	last := failed[len(failed)-1]
	since := failed[0].start
	for _, f := range failed {
		if f.mech == mech {
			since = f.start
			break
		}
	}
	return Assessment{State: StateBlocked, Mechanism: mech, Since: since, Evidence: fmt.Sprintf(
		"%d trials since %s failed at %s with %s %s", len(failed), since.UTC().Format(time.RFC3339), last.stage, last.failure, last.basisText())}
}

// basisText says what a failure's verdict rests on, never claiming a
// control that was not taken.
func (s sample) basisText() string {
	switch s.basis {
	case basisControl:
		return "while the controls passed"
	case basisSibling:
		sib := fmt.Sprintf("%s to the same relay worked (%s at %s)", s.sibling.Transport, s.sibling.Feature, s.sibling.Start.UTC().Format(time.RFC3339))
		if s.ctlFail != "" {
			return "while " + sib + "; control unreachable: " + s.ctlFail
		}
		return "while " + sib + " (no control taken)"
	}
	return "with no control taken and no other transport to compare with: a network that is down would look the same"
}

// controlPassed reports whether a control passed in any trial of the
// window.
func (c *Classifier) controlPassed() bool {
	for _, w := range c.window {
		if w.ctlOK {
			return true
		}
	}
	return false
}

// dominant returns the most frequent mechanism of ss, the latest on a tie.
func dominant(ss []sample) Mechanism {
	count := map[Mechanism]int{}
	best, bestN := MechNone, 0
	for _, s := range ss {
		if s.mech == MechNone {
			continue
		}
		count[s.mech]++
		if count[s.mech] >= bestN {
			best, bestN = s.mech, count[s.mech]
		}
	}
	return best
}

// measured returns the successful trials of the window with a transfer
// ratio, oldest first.
func (c *Classifier) measured() []sample {
	var out []sample
	for _, s := range c.window {
		if s.out == outcomeOK && !math.IsNaN(s.ratio) {
			out = append(out, s)
		}
	}
	return out
}

func (c *Classifier) throttled() (Assessment, bool) {
	m := c.measured()
	if len(m) == 0 {
		return Assessment{}, false
	}
	last := m[len(m)-1]
	if c.cur.State == StateThrottled && last.ratio >= 2*c.th.ThrottleRatio {
		c.forgetBefore = last.start
		return Assessment{}, false
	}
	if c.cur.State != StateThrottled {
		if len(m) < c.th.ThrottleTrials {
			return Assessment{}, false
		}
		tail := m[len(m)-c.th.ThrottleTrials:]
		lo, hi := math.Inf(1), 0.0
		for _, s := range tail {
			if s.ratio >= c.th.ThrottleRatio {
				return Assessment{}, false
			}
			lo, hi = math.Min(lo, s.rate), math.Max(hi, s.rate)
		}
		if hi <= 0 || (hi-lo)/hi > c.th.ThrottleSpread {
			return Assessment{}, false
		}
	} else if last.ratio >= 2*c.th.ThrottleRatio {
		return Assessment{}, false
	}
	// The plateau started at the first of the latest run of slow transfers.
	i := len(m) - 1
	for i > 0 && m[i-1].ratio < 2*c.th.ThrottleRatio {
		i--
	}
	return Assessment{State: StateThrottled, Mechanism: MechThrottle, Since: m[i].start, Evidence: fmt.Sprintf(
		"%d transfers since %s held near %s, %.0f%% of the control's rate", len(m)-i, m[i].start.UTC().Format(time.RFC3339), FormatRate(last.rate), 100*last.ratio)}, true
}

func (c *Classifier) intermittent(s sample) (Assessment, bool) {
	if c.lastFailure.IsZero() || s.start.Sub(c.lastFailure) >= c.th.Quiet || c.lastFailure.Before(c.forgetBefore) {
		return Assessment{}, false
	}
	var failures []sample
	episodes, run, outageRun := 0, 0, 0
	cameBack := false // a run of two failures or more ended in a success
	for _, w := range c.window {
		if w.start.Before(c.forgetBefore) {
			continue
		}
		switch w.out {
		case outcomeBlocked, outcomeOutage:
			failures = append(failures, w)
			if run == 0 {
				episodes++
			}
			run++
			outageRun++
			if w.out != outcomeOutage {
				outageRun = 0
			}
		case outcomeOK:
			cameBack = cameBack || run >= 2
			run, outageRun = 0, 0
		}
	}
	n, rate := c.successRate(c.window)
	was := c.cur.State == StateIntermittent || c.cur.State == StateBlocked
	// It went down for two trials or more and came back, or the whole
	// network (controls too) is down for two trials or more, or it went
	// down twice and fails often enough. A run of failures with passing
	// controls that has not ended is left to the block rule.
	if !was && !cameBack && outageRun < 2 && (episodes < 2 || rate >= c.th.IntermittentBelow) {
		return Assessment{}, false
	}
	since := s.start
	if len(failures) > 0 {
		since = failures[0].start
	}
	if c.cur.State == StateBlocked {
		since = s.start // it came back: intermittent from now on
	}
	mech := dominant(failures)
	if mech == MechNone {
		mech = c.cur.Mechanism
	}
	outages := 0
	for _, f := range failures {
		if f.out == outcomeOutage {
			outages++
		}
	}
	ev := fmt.Sprintf("%d of the last %d trials failed (%s); the last failure was at %s", len(failures), n, mech, c.lastFailure.UTC().Format(time.RFC3339))
	if outages > 0 {
		ev += fmt.Sprintf("; the control failed too with %d of them", outages)
	}
	return Assessment{State: StateIntermittent, Mechanism: mech, Since: since, Evidence: ev}, true
}

func (c *Classifier) okOrDegraded() Assessment {
	var ratios []float64
	var runtimes []time.Duration
	since := time.Time{}
	for _, s := range c.window {
		switch s.out {
		case outcomeOK:
			if since.IsZero() {
				since = s.start
			}
			runtimes = append(runtimes, s.runtime)
			if !math.IsNaN(s.ratio) {
				ratios = append(ratios, s.ratio)
			}
		case outcomeBlocked, outcomeOutage:
			since = time.Time{}
		}
	}
	n, rate := c.successRate(c.window)
	// Degraded needs the latest transfer to be slow too: after a throttle
	// ends, the window's median lags behind.
	if len(ratios) > 0 && ratios[len(ratios)-1] < c.th.DegradedRatio {
		if r := median(ratios); r < c.th.DegradedRatio {
			return Assessment{State: StateDegraded, Since: since, Evidence: fmt.Sprintf("transfers run at %.0f%% of the control's rate (median), without a plateau", 100*r)}
		}
	}
	if len(runtimes) > 0 {
		if d := medianDuration(runtimes); d > c.th.SlowRuntime {
			return Assessment{State: StateDegraded, Since: since, Evidence: fmt.Sprintf("trials take %v (median), more than %v", d.Round(time.Second), c.th.SlowRuntime)}
		}
	}
	// Ok since the first of the latest run of successes at the control's
	// pace (not since a throttled one).
	for i := len(c.window) - 1; i >= 0; i-- {
		w := c.window[i]
		if w.out == outcomeOK && (math.IsNaN(w.ratio) || w.ratio >= c.th.DegradedRatio) {
			since = w.start
		} else if w.out != outcomeOther {
			break
		}
	}
	ev := fmt.Sprintf("%.0f%% of the last %d trials succeeded", 100*rate, n)
	if last := c.window[len(c.window)-1]; last.ctlFail != "" {
		ev += "; control unreachable: " + last.ctlFail + ", so rates are not compared with it"
	}
	return Assessment{State: StateOK, Since: since, Evidence: ev}
}

// successRate returns how many samples of ss say something of the network
// (all but outcomeOther) and the share of them that succeeded.
func (c *Classifier) successRate(ss []sample) (int, float64) {
	n, ok := 0, 0
	for _, s := range ss {
		switch s.out {
		case outcomeOK:
			n++
			ok++
		case outcomeBlocked, outcomeOutage:
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return n, float64(ok) / float64(n)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianDuration(xs []time.Duration) time.Duration {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// confidence returns how sure the monitor is of a: the share of the trials
// since a.Since (within the window) that agree with it, times their number
// over confidenceTrials, capped at 1. An intermittent cell's trials agree
// with it by alternating: its confidence is the number of times they went
// from success to failure or back, over 4. Unknown has confidence 0.
func (c *Classifier) confidence(a Assessment) float64 {
	if a.State == StateUnknown {
		return 0
	}
	var total, flips int
	agree := 0.0
	prev := outcomeOther
	for _, s := range c.window {
		if s.start.Before(a.Since) || s.out == outcomeOther {
			continue
		}
		total++
		if agrees(a, s, c.th) {
			agree += weight(a, s)
		}
		failed := s.out != outcomeOK
		if prev != outcomeOther && failed != (prev != outcomeOK) {
			flips++
		}
		prev = s.out
	}
	if total == 0 {
		return 0
	}
	if a.State == StateIntermittent {
		return math.Min(1, float64(flips)/4)
	}
	coverage := math.Min(1, float64(total)/confidenceTrials)
	return agree / float64(total) * coverage
}

// weight is how much an agreeing trial counts toward confidence: a failure
// counts fully when the controls passed, 0.75 when only another transport
// to the relay showed the network worked, and 0.5 when nothing did (no
// control taken).
func weight(a Assessment, s sample) float64 {
	if a.State != StateBlocked {
		return 1
	}
	switch s.basis {
	case basisSibling:
		return 0.75
	case basisNone:
		return 0.5
	}
	return 1
}

// confidenceTrials is how many agreeing trials give full confidence.
const confidenceTrials = 5

func agrees(a Assessment, s sample, th Thresholds) bool {
	switch a.State {
	case StateOK, StateDegraded:
		return s.out == outcomeOK
	case StateThrottled:
		return s.out == outcomeOK && (math.IsNaN(s.ratio) || s.ratio < 2*th.ThrottleRatio)
	case StateBlocked:
		return s.out == outcomeBlocked && s.mech == a.Mechanism
	}
	return false
}
