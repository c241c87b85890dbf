package censor

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Action is what the censor does to a flow.
type Action string

// The actions of a verdict.
const (
	// Pass forwards the flow untouched.
	Pass Action = "pass"
	// Drop stops forwarding the client's bytes (the packet that triggered
	// the verdict included) and keeps the connection open, so the client
	// sees a connection that hangs until it gives up; the server's bytes
	// still reach the client. This is what a censor that drops
	// client-to-server packets silently looks like through a TCP proxy.
	Drop Action = "drop"
	// Reset closes both sides with a TCP RST (SO_LINGER 0), as a censor
	// that injects resets both ways.
	Reset Action = "reset"
	// Throttle forwards both directions at a limited rate.
	Throttle Action = "throttle"
	// NullRoute makes the server unreachable, as a censor that drops its
	// SYNs (or its SYN/ACKs): connecting hangs until the client gives up,
	// with no RST, and nothing passes either way. The Middlebox drops the
	// SYNs themselves when its listener allows (see Middlebox.Serve).
	NullRoute Action = "null-route"
)

// valid reports whether a is one of allowed.
func (a Action) validIn(allowed ...Action) error {
	if slices.Contains(allowed, a) {
		return nil
	}
	return fmt.Errorf("action %q is not one of %v", a, allowed)
}

// Verdict is the engine's decision on a flow.
type Verdict struct {
	// Rule names the rule that decided, empty when none fired.
	Rule   string
	Action Action
	// Evidence says why, in words and numbers a person can check.
	Evidence string
	// RateBPS and Burst are the throttle's rate in bits per second and its
	// bucket size in bytes when Action is Throttle.
	RateBPS float64
	Burst   int

	// outages are the outage rules that may still disrupt the flow.
	outages []*outageEval
	// watch are the record-shape rules still waiting for the flow's TLS
	// records.
	watch []*tlsInTLSEval
}

// passVerdict is the verdict of a flow no rule touched.
var passVerdict = Verdict{Action: Pass}

// Duration is a time.Duration written in policy files as a Go duration
// string ("180s", "1m30s", "280ms").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string; negative durations are rejected.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"180s\": %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("parse duration: %w", err)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

// or returns d, or def when d is zero.
func (d Duration) or(def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// Match selects the flows a rule applies to. Every non-empty field must
// match; the zero Match matches every flow.
type Match struct {
	// Servers are the server IP ranges (CIDR), as Wu et al.'s detector
	// watched only datacenter ranges.
	Servers []netip.Prefix `json:"servers,omitempty"`
	// Ports are the server ports.
	Ports []uint16 `json:"ports,omitempty"`
	// Kinds are the kinds of first payload ("tls", "http", "other").
	Kinds []Kind `json:"kinds,omitempty"`
	// Hosts are SNI or HTTP Host names: "example.com" matches that name
	// only, ".example.com" or "*.example.com" any name under it (not the
	// name itself). Matching is case-insensitive.
	Hosts []string `json:"hosts,omitempty"`
}

// validate checks the match's fields.
func (m *Match) validate() error {
	for _, k := range m.Kinds {
		if k != KindTLS && k != KindHTTP && k != KindOther {
			return fmt.Errorf("kind %q is not tls, http or other", k)
		}
	}
	for _, h := range m.Hosts {
		name := strings.TrimPrefix(strings.TrimPrefix(h, "*"), ".")
		if n, ok := normalizeHost(name); !ok || n != strings.ToLower(name) {
			return fmt.Errorf("host %q is not a host name or .suffix", h)
		}
	}
	for _, p := range m.Servers {
		if !p.IsValid() {
			return fmt.Errorf("server range %v is invalid", p)
		}
	}
	return nil
}

// connOnly reports whether the match can be decided when a connection
// opens, before any payload.
func (m *Match) connOnly() bool { return len(m.Kinds) == 0 && len(m.Hosts) == 0 }

// matchServer reports whether server is in the match's servers and ports.
func (m *Match) matchServer(server netip.AddrPort) bool {
	if len(m.Ports) > 0 && !slices.Contains(m.Ports, server.Port()) {
		return false
	}
	if len(m.Servers) == 0 {
		return true
	}
	a := server.Addr().Unmap()
	for _, p := range m.Servers {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// matchFlow reports whether the flow matches, and which host matched.
func (m *Match) matchFlow(f *Flow) (host string, ok bool) {
	if !m.matchServer(f.Server) {
		return "", false
	}
	if len(m.Kinds) > 0 && !slices.Contains(m.Kinds, f.Kind) {
		return "", false
	}
	if len(m.Hosts) == 0 {
		return "", true
	}
	h := matchHost(m.Hosts, f.Host)
	return h, h != ""
}

// matchHost returns the entry of list that host matches, or "".
func matchHost(list []string, host string) string {
	if host == "" {
		return ""
	}
	host = strings.ToLower(host)
	for _, e := range list {
		le := strings.ToLower(e)
		switch {
		case strings.HasPrefix(le, "*."):
			if strings.HasSuffix(host, le[1:]) {
				return e
			}
		case strings.HasPrefix(le, "."):
			if strings.HasSuffix(host, le) {
				return e
			}
		case host == le:
			return e
		}
	}
	return ""
}

// evaluator is a rule compiled for an engine, with its state. The engine
// calls its methods with its mutex held.
type evaluator interface {
	// admit decides on a connection when it opens, before any payload.
	admit(e *Engine, client netip.Addr, server netip.AddrPort, now time.Time) (Verdict, bool)
	// inspect decides on a flow's first client payload.
	inspect(e *Engine, f *Flow, now time.Time) (Verdict, bool)
}

// noAdmit is embedded by rules that decide on payloads only.
type noAdmit struct{}

func (noAdmit) admit(*Engine, netip.Addr, netip.AddrPort, time.Time) (Verdict, bool) {
	return Verdict{}, false
}
