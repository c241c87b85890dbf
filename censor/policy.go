package censor

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
)

// Policy is a named set of rules: one scenario of docs/gfw.md section
// 5. Its file format is JSON, decoded strictly by ParsePolicy:
//
//	{
//	  "name": "fet-2021",
//	  "description": "what the censor does",
//	  "sources": ["Wu et al., USENIX Security 2023"],
//	  "rules": [
//	    {"name": "fet", "fet": {"probability": 0.263, "residual": "180s"}}
//	  ]
//	}
//
// Each rule object has an optional name and exactly one rule key: one of
// "signature", "fet", "host", "tls_gate", "whitelist", "throttle",
// "outage", "probe", "ech", "ip_block", "tls_in_tls". docs/censor.md
// lists every field.
type Policy struct {
	Name        string     `json:"name"`
	Description string     `json:"description,omitempty"`
	Sources     []string   `json:"sources,omitempty"`
	Rules       []RuleSpec `json:"rules"`
}

// RuleSpec is one rule of a policy: a name and exactly one rule.
type RuleSpec struct {
	// Name names the rule in verdicts and logs; the rule key when empty.
	Name      string           `json:"name,omitempty"`
	Signature *SignatureRule   `json:"signature,omitempty"`
	FET       *FETRule         `json:"fet,omitempty"`
	Host      *HostRule        `json:"host,omitempty"`
	TLSGate   *FingerprintRule `json:"tls_gate,omitempty"`
	Whitelist *WhitelistRule   `json:"whitelist,omitempty"`
	Throttle  *ThrottleRule    `json:"throttle,omitempty"`
	Outage    *OutageRule      `json:"outage,omitempty"`
	Probe     *ProbeRule       `json:"probe,omitempty"`
	ECH       *ECHRule         `json:"ech,omitempty"`
	IPBlock   *IPBlockRule     `json:"ip_block,omitempty"`
	TLSInTLS  *TLSInTLSRule    `json:"tls_in_tls,omitempty"`
}

// maxPolicy bounds a policy file.
const maxPolicy = 1 << 20

// ParsePolicy decodes and validates a policy file. Unknown fields, a rule
// with no or several rule keys, duplicate rule names, trailing data and
// out-of-range parameters are errors.
func ParsePolicy(b []byte) (*Policy, error) {
	if len(b) > maxPolicy {
		return nil, fmt.Errorf("parse policy: %d bytes is over the limit of %d", len(b), maxPolicy)
	}
	if err := checkKeys(b); err != nil {
		return nil, fmt.Errorf("parse policy: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("parse policy: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse policy: data after the policy object")
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("parse policy %q: %w", p.Name, err)
	}
	return &p, nil
}

// checkKeys rejects object keys that are not spelled exactly as the
// format's field names (lower-case ASCII, digits and underscores):
// encoding/json would otherwise accept "Name" or "nAme" for "name".
// Syntax errors are left to the decoder.
func checkKeys(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	var stack []bool // for each open container: is it an object?
	expectKey := false
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				stack = append(stack, d == '{')
				expectKey = d == '{'
			default:
				stack = stack[:len(stack)-1]
				expectKey = len(stack) > 0 && stack[len(stack)-1]
			}
			continue
		}
		if expectKey {
			k, _ := tok.(string)
			for i := 0; i < len(k); i++ {
				if c := k[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
					return fmt.Errorf("unknown field %q: field names are lower case", k)
				}
			}
			expectKey = false
			continue
		}
		expectKey = len(stack) > 0 && stack[len(stack)-1]
	}
}

// Validate checks the policy's rules and parameters.
func (p *Policy) Validate() error {
	if p.Name == "" {
		return errors.New("policy has no name")
	}
	_, err := p.compile()
	return err
}

// ruleKey returns the single rule of s and its key.
func (s *RuleSpec) rule() (key string, r interface{ validate() error }, err error) {
	var found []string
	add := func(k string, ok bool, v interface{ validate() error }) {
		if ok {
			found = append(found, k)
			key, r = k, v
		}
	}
	add("signature", s.Signature != nil, s.Signature)
	add("fet", s.FET != nil, s.FET)
	add("host", s.Host != nil, s.Host)
	add("tls_gate", s.TLSGate != nil, s.TLSGate)
	add("whitelist", s.Whitelist != nil, s.Whitelist)
	add("throttle", s.Throttle != nil, s.Throttle)
	add("outage", s.Outage != nil, s.Outage)
	add("probe", s.Probe != nil, s.Probe)
	add("ech", s.ECH != nil, s.ECH)
	add("ip_block", s.IPBlock != nil, s.IPBlock)
	add("tls_in_tls", s.TLSInTLS != nil, s.TLSInTLS)
	switch len(found) {
	case 0:
		return "", nil, errors.New("no rule key (signature, fet, host, tls_gate, whitelist, throttle, outage, probe, ech, ip_block or tls_in_tls)")
	case 1:
		return key, r, nil
	}
	return "", nil, fmt.Errorf("several rule keys %v in one rule", found)
}

// compile validates the policy and returns its rules' evaluators.
func (p *Policy) compile() ([]evaluator, error) {
	var evs []evaluator
	names := map[string]bool{}
	for i := range p.Rules {
		s := &p.Rules[i]
		key, r, err := s.rule()
		if err != nil {
			return nil, fmt.Errorf("rule %d: %w", i, err)
		}
		name := s.Name
		if name == "" {
			name = key
		}
		if names[name] {
			return nil, fmt.Errorf("rule %d: name %q used twice; name the rules", i, name)
		}
		names[name] = true
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("rule %d (%s): %w", i, name, err)
		}
		var ev evaluator
		switch {
		case s.Signature != nil:
			ev, err = newSignatureEval(s.Signature, name)
		case s.FET != nil:
			ev = &fetEval{rule: s.FET, id: name}
		case s.Host != nil:
			ev = &hostEval{rule: s.Host, id: name}
		case s.TLSGate != nil:
			ev = &gateEval{rule: s.TLSGate, id: name}
		case s.Whitelist != nil:
			ev = &whitelistEval{rule: s.Whitelist, id: name}
		case s.Throttle != nil:
			ev = &throttleEval{rule: s.Throttle, id: name}
		case s.Outage != nil:
			ev = &outageEval{rule: s.Outage, id: name}
		case s.Probe != nil:
			ev = &probeEval{rule: s.Probe, id: name}
		case s.ECH != nil:
			ev = &echEval{rule: s.ECH, id: name}
		case s.IPBlock != nil:
			ev, err = newIPBlockEval(s.IPBlock, name)
		case s.TLSInTLS != nil:
			ev = &tlsInTLSEval{rule: s.TLSInTLS, id: name}
		}
		if err != nil {
			return nil, fmt.Errorf("rule %d (%s): %w", i, name, err)
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

//go:embed policies/*.json
var policyFS embed.FS

// PolicyNames lists the policies shipped with the package, sorted.
func PolicyNames() []string {
	entries, err := fs.ReadDir(policyFS, "policies")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// LoadPolicy returns the shipped policy called name (see PolicyNames) or,
// if there is none, the policy in the file at that path.
func LoadPolicy(nameOrFile string) (*Policy, error) {
	if slices.Contains(PolicyNames(), nameOrFile) {
		b, err := policyFS.ReadFile(path.Join("policies", nameOrFile+".json"))
		if err != nil {
			return nil, fmt.Errorf("load policy %s: %w", nameOrFile, err)
		}
		return ParsePolicy(b)
	}
	b, err := os.ReadFile(nameOrFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !strings.ContainsAny(nameOrFile, "/.") {
			return nil, fmt.Errorf("load policy: no policy named %q (have %s) and no such file", nameOrFile, strings.Join(PolicyNames(), ", "))
		}
		return nil, fmt.Errorf("load policy: %w", err)
	}
	return ParsePolicy(b)
}
