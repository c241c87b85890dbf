package censor

import (
	"fmt"
	"net/netip"
	"time"
)

// OutageRule takes matching flows down on a random schedule: up for a time
// drawn in [UpMin, UpMax], then down for a time drawn in [DownMin,
// DownMax] (seconds to minutes), and so on. During an outage new
// connections fail (New) and existing ones are cut (Existing). It models
// the intermittent drops of the 2017 WhatsApp block and the
// "sensitive period" outages of docs/gfw.md sections 1, 2 and 5. An
// existing connection is cut at its next read or write during an outage:
// a censor can only act on packets that exist.
type OutageRule struct {
	Match
	// UpMin and UpMax bound the time between outages; 30 s and 5 min when
	// zero.
	UpMin Duration `json:"up_min,omitempty"`
	UpMax Duration `json:"up_max,omitempty"`
	// DownMin and DownMax bound an outage's length; 5 s and 2 min when
	// zero.
	DownMin Duration `json:"down_min,omitempty"`
	DownMax Duration `json:"down_max,omitempty"`
	// New is what happens to a connection opened during an outage: Reset
	// (the default) or Drop.
	New Action `json:"new,omitempty"`
	// Existing is what happens to a connection open when an outage
	// starts: Reset (the default), Drop, or Pass to leave it alone.
	Existing Action `json:"existing,omitempty"`
}

// The default outage schedule.
const (
	outageUpMin   = 30 * time.Second
	outageUpMax   = 5 * time.Minute
	outageDownMin = 5 * time.Second
	outageDownMax = 2 * time.Minute
)

func (r *OutageRule) bounds() (upMin, upMax, downMin, downMax time.Duration) {
	return r.UpMin.or(outageUpMin), r.UpMax.or(outageUpMax), r.DownMin.or(outageDownMin), r.DownMax.or(outageDownMax)
}

func (r *OutageRule) validate() error {
	upMin, upMax, downMin, downMax := r.bounds()
	if upMin > upMax || downMin > downMax {
		return fmt.Errorf("outage bounds: up [%v, %v], down [%v, %v]: a minimum exceeds its maximum", upMin, upMax, downMin, downMax)
	}
	if upMin <= 0 || downMin <= 0 {
		return fmt.Errorf("outage bounds must be positive")
	}
	if r.New != "" {
		if err := r.New.validIn(Reset, Drop); err != nil {
			return fmt.Errorf("new: %w", err)
		}
	}
	if r.Existing != "" {
		if err := r.Existing.validIn(Reset, Drop, Pass); err != nil {
			return fmt.Errorf("existing: %w", err)
		}
	}
	return r.Match.validate()
}

// outageEval keeps the current window of the schedule. Windows are drawn
// lazily as time passes, from the engine's Rand, so the schedule is
// reproducible under a seeded Rand and costs constant memory.
type outageEval struct {
	rule *OutageRule
	id   string

	started    bool
	down       bool      // the current window is an outage
	start, end time.Time // the current window
}

// window advances the schedule to now and returns whether now is in an
// outage, and the current window's bounds.
func (ev *outageEval) window(e *Engine, now time.Time) (down bool, start, end time.Time) {
	upMin, upMax, downMin, downMax := ev.rule.bounds()
	if !ev.started {
		ev.started = true
		ev.down = false
		ev.start, ev.end = now, now.Add(e.rnd.duration(upMin, upMax))
	}
	for !now.Before(ev.end) {
		ev.down = !ev.down
		ev.start = ev.end
		if ev.down {
			ev.end = ev.start.Add(e.rnd.duration(downMin, downMax))
		} else {
			ev.end = ev.start.Add(e.rnd.duration(upMin, upMax))
		}
	}
	if now.Before(ev.start) {
		return false, now, ev.start // a clock set backwards sees no outage
	}
	return ev.down, ev.start, ev.end
}

func (ev *outageEval) verdict(down bool, start, end time.Time, a Action, what string) Verdict {
	return Verdict{
		Rule:     ev.id,
		Action:   a,
		Evidence: fmt.Sprintf("%s during an outage from %s for %v", what, start.UTC().Format(time.RFC3339), end.Sub(start)),
	}
}

func (ev *outageEval) admit(e *Engine, client netip.Addr, server netip.AddrPort, now time.Time) (Verdict, bool) {
	if !ev.rule.connOnly() || !ev.rule.matchServer(server) {
		return Verdict{}, false
	}
	down, start, end := ev.window(e, now)
	if !down {
		return Verdict{}, false
	}
	return ev.verdict(down, start, end, cmpAction(ev.rule.New, Reset), "new connection"), true
}

func (ev *outageEval) inspect(e *Engine, f *Flow, now time.Time) (Verdict, bool) {
	if _, ok := ev.rule.matchFlow(f); !ok {
		return Verdict{}, false
	}
	down, start, end := ev.window(e, now)
	if down {
		return ev.verdict(down, start, end, cmpAction(ev.rule.New, Reset), "new flow"), true
	}
	if cmpAction(ev.rule.Existing, Reset) == Pass {
		return Verdict{}, false
	}
	// Up: the flow passes this rule but is watched for the next outage.
	return Verdict{Action: Pass, outages: []*outageEval{ev}}, true
}

// disrupt returns the verdict for an existing flow at now: fired when an
// outage is under way.
func (ev *outageEval) disrupt(e *Engine, now time.Time) (Verdict, bool) {
	down, start, end := ev.window(e, now)
	if !down {
		return Verdict{}, false
	}
	return ev.verdict(down, start, end, cmpAction(ev.rule.Existing, Reset), "existing flow cut"), true
}
