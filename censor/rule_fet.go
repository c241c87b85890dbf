package censor

import (
	"cmp"
	"fmt"
	"math/bits"
	"time"
)

// FETRule is the Great Firewall's detector of fully encrypted traffic, from
// Wu et al., "How the Great Firewall of China Detects and Blocks Fully
// Encrypted Traffic", USENIX Security 2023 (sections 4 and 5; active from
// November 2021 to March 2023).
//
// It looks only at the first client payload of a connection, on any port,
// for servers in the Match's ranges. The payload is let through if any of
// the five exemptions holds (see FETExemption); otherwise the connection is
// blocked with probability Probability: the client's packets are dropped
// (Drop), and the (client IP, server IP, server port) 3-tuple stays blocked
// for Residual. Zero fields take the published values.
type FETRule struct {
	Match
	// Probability of blocking a payload no exemption lets through; 0.263
	// when zero (Wu et al. section 4.3). Use 1 for a deterministic censor.
	Probability float64 `json:"probability,omitempty"`
	// Residual is how long the 3-tuple stays blocked after a block; 180 s
	// when zero (section 5).
	Residual Duration `json:"residual,omitempty"`
	// PopcountLow and PopcountHigh bound the average set bits per byte
	// that make a payload suspicious: exempt at or below 3.4, or at or
	// above 4.6, when zero (exemption 1).
	PopcountLow  float64 `json:"popcount_low,omitempty"`
	PopcountHigh float64 `json:"popcount_high,omitempty"`
	// PrintablePrefix exempts a payload whose first PrintablePrefix bytes
	// are printable ASCII; 6 when zero (exemption 2).
	PrintablePrefix int `json:"printable_prefix,omitempty"`
	// PrintableFraction exempts a payload of which more than this
	// fraction is printable; 0.5 when zero (exemption 3).
	PrintableFraction float64 `json:"printable_fraction,omitempty"`
	// PrintableRun exempts a payload with more than this many contiguous
	// printable bytes; 20 when zero (exemption 4).
	PrintableRun int `json:"printable_run,omitempty"`
}

// The published parameters of the detector (Wu et al. 2023).
const (
	FETProbability       = 0.263
	FETResidual          = 180 * time.Second
	fetPopcountLow       = 3.4
	fetPopcountHigh      = 4.6
	fetPrintablePrefix   = 6
	fetPrintableFraction = 0.5
	fetPrintableRun      = 20
)

func (r *FETRule) validate() error {
	switch {
	case r.Probability < 0 || r.Probability > 1:
		return fmt.Errorf("probability %v is not in [0, 1]", r.Probability)
	case r.PopcountLow < 0 || r.PopcountHigh < 0 || r.PopcountLow > 8 || r.PopcountHigh > 8:
		return fmt.Errorf("popcount bounds must be in [0, 8]")
	case r.PrintablePrefix < 0 || r.PrintableRun < 0:
		return fmt.Errorf("printable_prefix and printable_run must not be negative")
	case r.PrintableFraction < 0 || r.PrintableFraction > 1:
		return fmt.Errorf("printable_fraction %v is not in [0, 1]", r.PrintableFraction)
	}
	return r.Match.validate()
}

func isPrintable(c byte) bool { return c >= 0x20 && c <= 0x7e }

// FETStats are the measures of a first payload that Wu et al.'s detector
// looks at.
type FETStats struct {
	Len int
	// Popcount is the average number of set bits per byte.
	Popcount float64
	// PrintablePrefix is the number of leading printable ASCII bytes.
	PrintablePrefix int
	// Printable is the number of printable ASCII bytes (0x20-0x7e).
	Printable int
	// LongestRun is the longest run of contiguous printable bytes.
	LongestRun int
}

// MeasureFET computes the detector's measures of b.
func MeasureFET(b []byte) FETStats {
	s := FETStats{Len: len(b)}
	ones, run, prefix := 0, 0, true
	for _, c := range b {
		ones += bits.OnesCount8(c)
		if isPrintable(c) {
			s.Printable++
			run++
			s.LongestRun = max(s.LongestRun, run)
			if prefix {
				s.PrintablePrefix++
			}
		} else {
			run, prefix = 0, false
		}
	}
	if len(b) > 0 {
		s.Popcount = float64(ones) / float64(len(b))
	}
	return s
}

// FETExemption returns the exemption of Wu et al.'s detector, with the
// published parameters, that lets the first payload b through, or "" when
// none does and the detector would block the connection with probability
// 0.263. An empty payload is exempt. Transports use it to check their
// first packets.
func FETExemption(b []byte) string {
	var r FETRule
	return r.exemption(b)
}

// exemption returns why b is let through, or "" if it is suspicious.
func (r *FETRule) exemption(b []byte) string {
	if len(b) == 0 {
		return "empty payload"
	}
	s := MeasureFET(b)
	lo, hi := r.PopcountLow, r.PopcountHigh
	if lo == 0 {
		lo = fetPopcountLow
	}
	if hi == 0 {
		hi = fetPopcountHigh
	}
	prefix := cmp.Or(r.PrintablePrefix, fetPrintablePrefix)
	frac := r.PrintableFraction
	if frac == 0 {
		frac = fetPrintableFraction
	}
	run := cmp.Or(r.PrintableRun, fetPrintableRun)
	switch {
	case s.Popcount <= lo:
		return fmt.Sprintf("ex1: popcount %.3f/byte <= %v", s.Popcount, lo)
	case s.Popcount >= hi:
		return fmt.Sprintf("ex1: popcount %.3f/byte >= %v", s.Popcount, hi)
	case s.PrintablePrefix >= prefix:
		return fmt.Sprintf("ex2: first %d bytes printable", prefix)
	case float64(s.Printable) > frac*float64(s.Len):
		return fmt.Sprintf("ex3: %d of %d bytes printable (> %v)", s.Printable, s.Len, frac)
	case s.LongestRun > run:
		return fmt.Sprintf("ex4: %d contiguous printable bytes (> %d)", s.LongestRun, run)
	case isTLSPrefix(b):
		return "ex5: TLS record prefix"
	case hasFETHTTPPrefix(b):
		return "ex5: HTTP method prefix"
	}
	return ""
}

// hasFETHTTPPrefix reports whether b starts with one of the HTTP methods
// of exemption 5.
func hasFETHTTPPrefix(b []byte) bool {
	for _, m := range [...]string{"GET ", "PUT ", "POST ", "HEAD "} {
		if len(b) >= len(m) && string(b[:len(m)]) == m {
			return true
		}
	}
	return false
}

type fetEval struct {
	noAdmit
	rule *FETRule
	id   string
}

func (ev *fetEval) inspect(e *Engine, f *Flow, now time.Time) (Verdict, bool) {
	r := ev.rule
	if len(f.First) == 0 || !r.matchServer(f.Server) {
		return Verdict{}, false
	}
	if _, ok := r.matchFlow(f); !ok {
		return Verdict{}, false
	}
	if r.exemption(f.First) != "" {
		return Verdict{}, false
	}
	p := r.Probability
	if p == 0 {
		p = FETProbability
	}
	if e.rnd.float() >= p {
		return Verdict{}, false
	}
	residual := r.Residual.or(FETResidual)
	s := MeasureFET(f.First)
	e.blockTuple(f, ev.id, Drop, residual, now)
	return Verdict{
		Rule:   ev.id,
		Action: Drop,
		Evidence: fmt.Sprintf("first payload %d bytes, popcount %.3f/byte, %d printable, printable prefix %d, longest printable run %d: no exemption; blocked (p=%v), 3-tuple blocked for %v",
			s.Len, s.Popcount, s.Printable, s.PrintablePrefix, s.LongestRun, p, residual),
	}, true
}
