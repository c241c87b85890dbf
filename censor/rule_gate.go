package censor

import (
	"fmt"
	"slices"
	"time"
)

// FingerprintRule is a TLS fingerprint gate: only ClientHellos whose JA4
// (FoxIO's fingerprint, which survives Chrome's extension shuffling) is in
// the allow-list pass; other TLS flows, and flows that are not TLS unless
// NonTLS says otherwise, are reset. It models the censor of
// docs/gfw.md section 4, which tells library ClientHellos (Go's
// crypto/tls among them) from browsers'.
type FingerprintRule struct {
	Match
	// JA4 is the allow-list of JA4 fingerprints.
	JA4 []string `json:"ja4"`
	// Action is what happens to a flow not allowed: Reset (the default)
	// or Drop.
	Action Action `json:"action,omitempty"`
	// NonTLS is what happens to a flow whose first payload is not TLS:
	// the rule's Action when empty, or Pass to gate TLS flows only.
	NonTLS Action `json:"non_tls,omitempty"`
}

func (r *FingerprintRule) validate() error {
	if len(r.JA4) == 0 {
		return fmt.Errorf("tls_gate rule has an empty ja4 allow-list")
	}
	for _, a := range []Action{r.Action, r.NonTLS} {
		if a != "" {
			if err := a.validIn(Reset, Drop, Pass); err != nil {
				return err
			}
		}
	}
	return r.Match.validate()
}

type gateEval struct {
	noAdmit
	rule *FingerprintRule
	id   string
}

func (ev *gateEval) inspect(e *Engine, f *Flow, now time.Time) (Verdict, bool) {
	r := ev.rule
	if _, ok := r.matchFlow(f); !ok || f.Kind == KindNone {
		return Verdict{}, false
	}
	action := cmpAction(r.Action, Reset)
	if f.Kind != KindTLS {
		a := cmpAction(r.NonTLS, action)
		if a == Pass {
			return Verdict{}, false
		}
		return Verdict{Rule: ev.id, Action: a, Evidence: fmt.Sprintf("first payload is %s, not a TLS ClientHello", f.Kind)}, true
	}
	if f.Hello == nil {
		return Verdict{Rule: ev.id, Action: action, Evidence: fmt.Sprintf("no ClientHello: %v", f.HelloErr)}, true
	}
	ja4 := f.JA4()
	if slices.Contains(r.JA4, ja4) {
		return Verdict{}, false
	}
	return Verdict{Rule: ev.id, Action: action, Evidence: fmt.Sprintf("JA4 %s is not in the allow-list of %d", ja4, len(r.JA4))}, true
}
