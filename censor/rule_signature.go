package censor

import (
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// SignatureRule blocks flows whose first client payload starts with one of
// a list of byte patterns: the plaintext protocol signature a DPI box
// matches. The 2017 WhatsApp block (docs/gfw.md section 2) is its
// example: WhatsApp's client opened every connection with "W A <major>
// <minor>" (57 41 04 01 natively, 57 41 01 05 in earlier versions), and
// from September 2017 China dropped such flows.
type SignatureRule struct {
	Match
	// Patterns are hex byte patterns matched against the start of the
	// first payload, bytes separated by spaces, "??" for any byte:
	// "57 41 04 01", "57 41 ?? ??".
	Patterns []string `json:"patterns"`
	// Action is Drop (the default) or Reset.
	Action Action `json:"action,omitempty"`
}

// pattern is a compiled byte pattern: want[i] is compared where any[i] is
// false.
type pattern struct {
	text string
	want []byte
	any  []bool
}

// parsePattern compiles a hex pattern.
func parsePattern(s string) (pattern, error) {
	p := pattern{text: s}
	for _, tok := range strings.Fields(s) {
		if tok == "??" {
			p.want = append(p.want, 0)
			p.any = append(p.any, true)
			continue
		}
		b, err := hex.DecodeString(tok)
		if err != nil || len(b) != 1 {
			return pattern{}, fmt.Errorf("pattern %q: %q is not a hex byte or ??", s, tok)
		}
		p.want = append(p.want, b[0])
		p.any = append(p.any, false)
	}
	if len(p.want) == 0 {
		return pattern{}, fmt.Errorf("pattern %q is empty", s)
	}
	return p, nil
}

// match reports whether b starts with the pattern.
func (p *pattern) match(b []byte) bool {
	if len(b) < len(p.want) {
		return false
	}
	for i, w := range p.want {
		if !p.any[i] && b[i] != w {
			return false
		}
	}
	return true
}

func (r *SignatureRule) validate() error {
	if len(r.Patterns) == 0 {
		return fmt.Errorf("signature rule has no patterns")
	}
	for _, s := range r.Patterns {
		if _, err := parsePattern(s); err != nil {
			return err
		}
	}
	if r.Action != "" {
		if err := r.Action.validIn(Drop, Reset); err != nil {
			return err
		}
	}
	return r.Match.validate()
}

type signatureEval struct {
	noAdmit
	rule     *SignatureRule
	id       string
	patterns []pattern
}

func newSignatureEval(r *SignatureRule, id string) (*signatureEval, error) {
	ev := &signatureEval{rule: r, id: id}
	for _, s := range r.Patterns {
		p, err := parsePattern(s)
		if err != nil {
			return nil, err
		}
		ev.patterns = append(ev.patterns, p)
	}
	return ev, nil
}

func (ev *signatureEval) inspect(e *Engine, f *Flow, now time.Time) (Verdict, bool) {
	if _, ok := ev.rule.matchFlow(f); !ok {
		return Verdict{}, false
	}
	for i := range ev.patterns {
		p := &ev.patterns[i]
		if p.match(f.First) {
			return Verdict{
				Rule:     ev.id,
				Action:   cmpAction(ev.rule.Action, Drop),
				Evidence: fmt.Sprintf("first bytes % x match signature %q", f.First[:len(p.want)], p.text),
			}, true
		}
	}
	return Verdict{}, false
}

// cmpAction returns a, or def when a is empty.
func cmpAction(a, def Action) Action {
	if a == "" {
		return def
	}
	return a
}
