package ranking

import (
	"cmp"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/ferry-im/ferry/link"
)

// Sign encodes r, with r.Cert as its certificate, and signs it with the
// certified ranking key. Zero Issued and Expires become now and now +
// DefaultTTL.
func Sign(r *Ranking, key ed25519.PrivateKey, now time.Time) ([]byte, error) {
	if !slices.Equal(key.Public().(ed25519.PublicKey), ed25519.PublicKey(r.Cert.Key[:])) {
		return nil, errors.New("sign ranking: the key is not the certified one")
	}
	if r.Issued.IsZero() {
		r.Issued = now
	}
	if r.Expires.IsZero() {
		r.Expires = r.Issued.Add(DefaultTTL)
	}
	b, err := r.appendUnsigned(nil)
	if err != nil {
		return nil, fmt.Errorf("sign ranking: %w", err)
	}
	if len(b)+ed25519.SignatureSize > MaxBlob {
		return nil, fmt.Errorf("sign ranking: %d bytes, more than %d", len(b)+ed25519.SignatureSize, MaxBlob)
	}
	return append(b, ed25519.Sign(key, append([]byte(rankingLabel), b...))...), nil
}

func (r *Ranking) appendUnsigned(b []byte) ([]byte, error) {
	b = append(append(b, magic...), Version)
	cert, _ := r.Cert.MarshalBinary()
	b = append(b, cert...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Issued.Unix()))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Expires.Unix()))
	if len(r.Networks) > 255 {
		return nil, errors.New("more than 255 networks")
	}
	b = append(b, byte(len(r.Networks)))
	for _, n := range r.Networks {
		if len(n.Name) > 255 || len(n.Prefixes) > 255 || len(n.Entries) > 255 {
			return nil, fmt.Errorf("network %q: a name, prefix list or entry list too long", n.Name)
		}
		b = append(append(b, byte(len(n.Name))), n.Name...)
		b = append(b, byte(len(n.Prefixes)))
		for _, p := range n.Prefixes {
			a := p.Addr().Unmap().AsSlice()
			b = append(append(b, byte(p.Bits()), byte(len(a))), a...)
		}
		b = append(b, byte(len(n.Entries)))
		for _, e := range n.Entries {
			if len(e.Transport) == 0 || len(e.Transport) > 16 || e.Score > 100 {
				return nil, fmt.Errorf("network %q: entry %q: a transport name of 1 to 16 bytes and a score up to 100 are needed", n.Name, e.Transport)
			}
			b = append(append(b, byte(len(e.Transport))), e.Transport...)
			b = append(b, byte(e.State), e.Score)
		}
	}
	return b, nil
}

// reader reads the blob's fields; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) next(n int) []byte {
	if r.err != nil || n > len(r.b) {
		if r.err == nil {
			r.err = fmt.Errorf("%w: ends early", ErrMalformed)
		}
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int { return int(r.next(1)[0]) }

func (r *reader) time() time.Time {
	return time.Unix(int64(binary.BigEndian.Uint64(r.next(8))), 0)
}

// Parse decodes a blob without verifying it; the signed bytes and the
// signature come back with it.
func Parse(blob []byte) (*Ranking, error) {
	if len(blob) > MaxBlob {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(blob))
	}
	rd := &reader{b: blob}
	if string(rd.next(3)) != magic || rd.u8() != Version {
		return nil, fmt.Errorf("%w: not a version %d ranking", ErrMalformed, Version)
	}
	r := new(Ranking)
	if err := r.Cert.UnmarshalBinary(rd.next(certLen)); err != nil && rd.err == nil {
		return nil, err
	}
	r.Issued, r.Expires = rd.time(), rd.time()
	for range rd.u8() {
		r.Networks = append(r.Networks, readNetwork(rd))
	}
	rd.next(ed25519.SignatureSize)
	if rd.err == nil && len(rd.b) > 0 {
		rd.err = fmt.Errorf("%w: %d bytes after the signature", ErrMalformed, len(rd.b))
	}
	return r, rd.err
}

func readNetwork(rd *reader) Network {
	n := Network{Name: string(rd.next(rd.u8()))}
	for range rd.u8() {
		bits, alen := rd.u8(), rd.u8()
		if alen != 4 && alen != 16 {
			rd.err = cmp.Or(rd.err, fmt.Errorf("%w: an address of %d bytes", ErrMalformed, alen))
			return n
		}
		addr, _ := netip.AddrFromSlice(rd.next(alen))
		p, err := addr.Prefix(bits)
		if err != nil || p.Bits() != bits || p.Addr() != addr {
			rd.err = cmp.Or(rd.err, fmt.Errorf("%w: prefix %v/%d", ErrMalformed, addr, bits))
			return n
		}
		n.Prefixes = append(n.Prefixes, p)
	}
	for range rd.u8() {
		e := Entry{Transport: string(rd.next(rd.u8()))}
		e.State, e.Score = State(rd.u8()), uint8(rd.u8())
		if rd.err == nil && (len(e.Transport) == 0 || len(e.Transport) > 16 || e.Score > 100 || e.State > Blocked) {
			rd.err = fmt.Errorf("%w: entry %q", ErrMalformed, e.Transport)
		}
		n.Entries = append(n.Entries, e)
	}
	return n
}

// Verify parses blob and checks it for the relay whose static key is
// relayKey (the link's) at now: the relay certified the ranking key, the
// ranking key signed the ranking, and both are current. Its errors wrap
// ErrMalformed, ErrForged or ErrStale.
func Verify(blob []byte, relayKey [32]byte, now time.Time) (*Ranking, error) {
	r, err := Parse(blob)
	if err != nil {
		return nil, err
	}
	if err := r.Cert.Verify(relayKey, now); err != nil {
		return nil, err
	}
	n := len(blob) - ed25519.SignatureSize
	if !ed25519.Verify(ed25519.PublicKey(r.Cert.Key[:]), append([]byte(rankingLabel), blob[:n]...), blob[n:]) {
		return nil, fmt.Errorf("%w: the ranking's signature does not verify", ErrForged)
	}
	switch {
	case !now.Before(r.Expires):
		return nil, fmt.Errorf("%w: it expired at %v", ErrStale, r.Expires.UTC())
	case r.Issued.After(now.Add(MaxSkew)):
		return nil, fmt.Errorf("%w: it was issued at %v, in the future", ErrStale, r.Issued.UTC())
	}
	return r, nil
}

// For returns the entries of the network whose prefixes hold addr (the
// longest matching prefix wins), else those of the default network
// (no prefixes), best first; nil when none applies.
func (r *Ranking) For(addr netip.Addr) []Entry { return Pick([]*Ranking{r}, addr) }

// Pick is For over several rankings (one per vantage): the network with
// the longest prefix holding addr in any of them, else the default network
// of the most recently issued one.
func Pick(rs []*Ranking, addr netip.Addr) []Entry {
	addr = addr.Unmap()
	var best *Network
	bits := -1
	var issued time.Time
	for _, r := range rs {
		for i := range r.Networks {
			n := &r.Networks[i]
			if len(n.Prefixes) == 0 && bits < 0 && (best == nil || r.Issued.After(issued)) {
				best, issued = n, r.Issued
			}
			for _, p := range n.Prefixes {
				if addr.IsValid() && p.Contains(addr) && p.Bits() > bits {
					best, bits = n, p.Bits()
				}
			}
		}
	}
	if best == nil {
		return nil
	}
	es := slices.Clone(best.Entries)
	slices.SortStableFunc(es, func(a, b Entry) int { return cmp.Compare(b.Score, a.Score) })
	return es
}

// unrankedScore is the score of a transport the ranking does not name: as
// if its state were unknown.
const unrankedScore = 20

// Order returns eps sorted by the score es gives their transports (best
// first; a transport es does not name scores as unknown); endpoints with
// equal scores keep their order.
func Order(eps []link.Endpoint, es []Entry) []link.Endpoint {
	score := func(ep link.Endpoint) int {
		for _, e := range es {
			if e.Transport == ep.Transport {
				return int(e.Score)
			}
		}
		return unrankedScore
	}
	out := slices.Clone(eps)
	slices.SortStableFunc(out, func(a, b link.Endpoint) int { return cmp.Compare(score(b), score(a)) })
	return out
}

// Score returns the score the monitor gives a transport in state s with
// the given confidence: ok 80 to 100 with confidence, degraded 60,
// throttled 40, intermittent 30, unknown 20, blocked 0.
func Score(s State, confidence float64) uint8 {
	switch s {
	case OK:
		return uint8(80 + 20*min(max(confidence, 0), 1))
	case Degraded:
		return 60
	case Throttled:
		return 40
	case Intermittent:
		return 30
	case Blocked:
		return 0
	}
	return unrankedScore
}
