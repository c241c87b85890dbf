package censor

import (
	"fmt"
	"slices"
	"time"
)

// ECHRule drops TLS flows that hide their server name: a ClientHello with
// the encrypted_server_name extension (ESNI, 0xffce) and, when ECH is set,
// with encrypted_client_hello (0xfe0d), on every port. The client's
// packets are dropped silently (no RST) and the (client IP, server IP,
// server port) 3-tuple stays blocked for Residual. Source: GFW Report,
// iYouPort and the Geneva team, "Exposing and Circumventing China's
// Censorship of ESNI" (August 2020): blocking since 2020-07-29, triggered
// by extension 0xffce alone, client-to-server drops, a residual block of
// 120 or 180 s; docs/gfw.md section 4 says to assume ECH will follow.
type ECHRule struct {
	Match
	// ECH also blocks encrypted_client_hello (0xfe0d), which the 2020
	// censor did not know; false blocks ESNI only.
	ECH bool `json:"ech,omitempty"`
	// Action is Drop (the default) or Reset.
	Action Action `json:"action,omitempty"`
	// Residual is how long the 3-tuple stays blocked; 180 s when zero
	// (the report saw 120 or 180 s).
	Residual Duration `json:"residual,omitempty"`
}

// ECHResidual is the longer residual block the ESNI report measured.
const ECHResidual = 180 * time.Second

func (r *ECHRule) validate() error {
	if r.Action != "" {
		if err := r.Action.validIn(Drop, Reset); err != nil {
			return err
		}
	}
	return r.Match.validate()
}

type echEval struct {
	noAdmit
	rule *ECHRule
	id   string
}

func (ev *echEval) inspect(e *Engine, f *Flow, now time.Time) (Verdict, bool) {
	if f.Hello == nil {
		return Verdict{}, false
	}
	if _, ok := ev.rule.matchFlow(f); !ok {
		return Verdict{}, false
	}
	var ext string
	switch {
	case slices.Contains(f.Hello.Extensions, extESNI):
		ext = "encrypted_server_name (0xffce)"
	case ev.rule.ECH && slices.Contains(f.Hello.Extensions, extECH):
		ext = "encrypted_client_hello (0xfe0d)"
	default:
		return Verdict{}, false
	}
	residual := ev.rule.Residual.or(ECHResidual)
	action := cmpAction(ev.rule.Action, Drop)
	e.blockTuple(f, ev.id, action, residual, now)
	return Verdict{
		Rule:     ev.id,
		Action:   action,
		Evidence: fmt.Sprintf("ClientHello carries %s; 3-tuple blocked for %v", ext, residual),
	}, true
}
