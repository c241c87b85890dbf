package obfs

import (
	"crypto/sha256"
	"fmt"
	"math/bits"
	"strconv"
)

// A shape is how a client makes its first packet fall inside one of the
// exemptions of the fully-encrypted-traffic detector of Wu et al. (USENIX
// Security 2023; docs/censor.md, rule fet): a prefix of printable bytes, or
// padding that pulls the packet's average popcount below 3.4 or above 4.6
// bits per byte. Each relay picks one from its key and puts it in its
// link as the parameter fet (docs/transports.md section 4.2).
type shape struct {
	kind   byte // 'p' printable prefix, 'l' low popcount, 'h' high popcount
	prefix int  // for 'p': the prefix length, minPrefix..maxPrefix
}

// Prefix lengths of the 'p' shape. The detector exempts a packet whose
// first 6 bytes are printable.
const (
	minPrefix = 6
	maxPrefix = 16
)

// String returns the shape's link form: "p6".."p16", "lo" or "hi".
func (s shape) String() string {
	switch s.kind {
	case 'l':
		return "lo"
	case 'h':
		return "hi"
	}
	return "p" + strconv.Itoa(s.prefix)
}

// parseShape parses the link form of a shape.
func parseShape(v string) (shape, error) {
	switch v {
	case "lo":
		return shape{kind: 'l'}, nil
	case "hi":
		return shape{kind: 'h'}, nil
	}
	if len(v) >= 2 && len(v) <= 3 && v[0] == 'p' && v[1] != '0' {
		n, err := strconv.Atoi(v[1:])
		if err == nil && n >= minPrefix && n <= maxPrefix {
			return shape{kind: 'p', prefix: n}, nil
		}
	}
	return shape{}, fmt.Errorf("unknown first-packet shape %q", v)
}

// shapeFor derives a relay's shape from its public key: a third of relays
// use each kind, and prefix lengths spread over 6..16.
func shapeFor(pub []byte) shape {
	h := sha256.Sum256(append([]byte("ferry-obfs-1 shape"), pub...))
	switch h[0] % 3 {
	case 0:
		return shape{kind: 'l'}
	case 1:
		return shape{kind: 'h'}
	}
	return shape{kind: 'p', prefix: minPrefix + int(h[1])%(maxPrefix-minPrefix+1)}
}

// prefixLen is the number of printable bytes before the representative.
func (s shape) prefixLen() int {
	if s.kind == 'p' {
		return s.prefix
	}
	return 0
}

// The published parameters of the detector, as in package censor's
// FETRule (which the tests check this against).
const (
	fetPopcountLow  = 3.4
	fetPopcountHigh = 4.6
	fetPrefix       = 6
	fetRun          = 20
)

func printable(c byte) bool { return c >= 0x20 && c <= 0x7e }

// fetExempt reports whether the detector lets b through as a first
// packet: any of its five exemptions holds.
func fetExempt(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	ones, nprint, run, longest, prefix := 0, 0, 0, 0, 0
	inPrefix := true
	for _, c := range b {
		ones += bits.OnesCount8(c)
		if printable(c) {
			nprint++
			run++
			longest = max(longest, run)
			if inPrefix {
				prefix++
			}
		} else {
			run, inPrefix = 0, false
		}
	}
	avg := float64(ones) / float64(len(b))
	switch {
	case avg <= fetPopcountLow || avg >= fetPopcountHigh:
		return true
	case prefix >= fetPrefix, 2*nprint > len(b), longest > fetRun:
		return true
	case len(b) >= 3 && (b[0] == 0x16 || b[0] == 0x17) && b[1] == 3 && b[2] <= 9:
		return true
	}
	for _, m := range [...]string{"GET ", "PUT ", "POST ", "HEAD "} {
		if len(b) >= len(m) && string(b[:len(m)]) == m {
			return true
		}
	}
	return false
}
