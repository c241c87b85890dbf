package censor

import (
	"fmt"
	"time"
)

// HostRule blocks flows by server name: the SNI of a ClientHello or the
// Host header of an HTTP request, checked on every port, matched against
// Match.Hosts (exact names and suffixes). A match gets RSTs both ways and
// starts a penalty: for Penalty, a fraction drawn in [PenaltyFailMin,
// PenaltyFailMax] of the later connections on the same (client IP, server
// IP, server port) 3-tuple also fail, whatever they carry. Sources: the
// SNI filtering of the Great Firewall and its residual penalty (Rambert et
// al., "Chinese Wall or Swiss Cheese? Keyword filtering in the Great
// Firewall of China", WWW 2021; docs/gfw.md section 4), used against
// WhatsApp's media hosts in July 2017 (section 2).
type HostRule struct {
	Match
	// Action is Reset (the default) or Drop.
	Action Action `json:"action,omitempty"`
	// Penalty is how long the 3-tuple stays penalised; 90 s when zero.
	Penalty Duration `json:"penalty,omitempty"`
	// PenaltyFailMin and PenaltyFailMax bound the fraction of connections
	// that fail during a penalty; 0.5 and 0.75 when both are zero.
	PenaltyFailMin float64 `json:"penalty_fail_min,omitempty"`
	PenaltyFailMax float64 `json:"penalty_fail_max,omitempty"`
}

// The published parameters of SNI blocking.
const (
	HostPenalty        = 90 * time.Second
	hostPenaltyFailMin = 0.5
	hostPenaltyFailMax = 0.75
)

func (r *HostRule) validate() error {
	if len(r.Hosts) == 0 {
		return fmt.Errorf("host rule has no hosts")
	}
	if r.Action != "" {
		if err := r.Action.validIn(Reset, Drop); err != nil {
			return err
		}
	}
	lo, hi := r.failRange()
	if lo < 0 || hi > 1 || lo > hi {
		return fmt.Errorf("penalty fail range [%v, %v] is not within [0, 1]", lo, hi)
	}
	return r.Match.validate()
}

func (r *HostRule) failRange() (lo, hi float64) {
	if r.PenaltyFailMin == 0 && r.PenaltyFailMax == 0 {
		return hostPenaltyFailMin, hostPenaltyFailMax
	}
	return r.PenaltyFailMin, r.PenaltyFailMax
}

type hostEval struct {
	noAdmit
	rule *HostRule
	id   string
}

func (ev *hostEval) inspect(e *Engine, f *Flow, now time.Time) (Verdict, bool) {
	entry, ok := ev.rule.matchFlow(f)
	if !ok {
		return Verdict{}, false
	}
	penalty := ev.rule.Penalty.or(HostPenalty)
	lo, hi := ev.rule.failRange()
	fail := e.rnd.between(lo, hi)
	action := cmpAction(ev.rule.Action, Reset)
	if penalty > 0 {
		e.addBlock(blockKey{client: f.Client.Addr().Unmap(), server: f.Server}, block{
			until: now.Add(penalty), rule: ev.id, action: action, fail: fail,
		}, now)
	}
	return Verdict{
		Rule:   ev.id,
		Action: action,
		Evidence: fmt.Sprintf("%s host %q matches %q; 3-tuple penalised for %v (%.0f%% of connections fail)",
			f.Kind, f.Host, entry, penalty, 100*fail),
	}, true
}
