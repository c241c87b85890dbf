package censor

import (
	"fmt"
	"slices"
	"time"
)

// WhitelistRule is a protocol whitelist: only flows whose first client
// payload is of an allowed kind (TLS and HTTP by default) pass; the others
// are dropped. Source: Bock et al., "Detecting and Evading
// Censorship-in-Depth: A Case Study of Iran's Protocol Whitelister", FOCI
// 2020, which found a censor that let through only the first packets it
// recognised as DNS, HTTP or HTTPS and dropped the rest of the flow.
type WhitelistRule struct {
	Match
	// Allow are the kinds that pass; ["tls", "http"] when empty.
	Allow []Kind `json:"allow,omitempty"`
	// Action is Drop (the default) or Reset.
	Action Action `json:"action,omitempty"`
}

func (r *WhitelistRule) validate() error {
	for _, k := range r.Allow {
		if k != KindTLS && k != KindHTTP && k != KindOther {
			return fmt.Errorf("allow: kind %q is not tls, http or other", k)
		}
	}
	if r.Action != "" {
		if err := r.Action.validIn(Drop, Reset); err != nil {
			return err
		}
	}
	return r.Match.validate()
}

type whitelistEval struct {
	noAdmit
	rule *WhitelistRule
	id   string
}

func (ev *whitelistEval) inspect(e *Engine, f *Flow, now time.Time) (Verdict, bool) {
	r := ev.rule
	if f.Kind == KindNone {
		return Verdict{}, false
	}
	if _, ok := r.matchFlow(f); !ok {
		return Verdict{}, false
	}
	allow := r.Allow
	if len(allow) == 0 {
		allow = []Kind{KindTLS, KindHTTP}
	}
	if slices.Contains(allow, f.Kind) {
		return Verdict{}, false
	}
	n := min(len(f.First), 8)
	return Verdict{
		Rule:     ev.id,
		Action:   cmpAction(r.Action, Drop),
		Evidence: fmt.Sprintf("first payload (% x...) is %s, not one of %v", f.First[:n], f.Kind, allow),
	}, true
}
