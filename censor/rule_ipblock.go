package censor

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// IPBlockRule null-routes servers by address: connections to a listed IP
// address, range or IP address and port never open, because the censor
// drops their SYNs, for every client and on every path through it. It
// models the Great Firewall's null routes for known proxy servers
// (docs/gfw.md section 5, scenario ip-block): Ensafi et al., "Examining
// How the Great Firewall Discovers Hidden Circumvention Servers", IMC
// 2015, saw Tor bridges blocked by IP address and port once discovered;
// Alice et al., "How China Detects and Blocks Shadowsocks", IMC 2020, saw
// servers blocked by port or by whole address, with packets dropped and
// no RST. Whichever direction the censor drops, the client's connect
// hangs. A server reached through a reverse proxy or CDN on another
// address is not on the list, and stays reachable.
type IPBlockRule struct {
	// Addresses are the blocked servers, each an IP address
	// ("203.0.113.7", "2001:db8::7"), a range ("203.0.113.0/24") or an IP
	// address and port ("203.0.113.7:443", "[2001:db8::7]:443"). At least
	// one is needed.
	Addresses []string `json:"addresses"`
}

// blockAddr is one entry of an IP block list.
type blockAddr struct {
	prefix netip.Prefix
	port   uint16 // 0: every port
}

// SYNTimeout is how long a client's connect to a null-routed address
// takes to fail with Linux's defaults (net.ipv4.tcp_syn_retries = 6: SYNs
// at 0, 1, 3, 7, 15, 31 and 63 s, given up after 127 s). Dialer waits
// this long on the engine's clock when its context has no earlier end.
const SYNTimeout = 127 * time.Second

// parseBlockAddr parses one entry of an IP block list.
func parseBlockAddr(s string) (blockAddr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return blockAddr{}, fmt.Errorf("address %q: %w", s, err)
		}
		if p != p.Masked() {
			return blockAddr{}, fmt.Errorf("address %q: range has bits set after its prefix; write %v", s, p.Masked())
		}
		if p.Addr().Is4In6() {
			return blockAddr{}, fmt.Errorf("address %q: write an IPv4 range in IPv4 form", s)
		}
		return blockAddr{prefix: p}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return blockAddr{}, fmt.Errorf("address %q has a zone", s)
		}
		a = a.Unmap()
		return blockAddr{prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return blockAddr{}, fmt.Errorf("address %q is not an IP address, range or IP address and port", s)
	}
	if ap.Addr().Zone() != "" || ap.Port() == 0 {
		return blockAddr{}, fmt.Errorf("address %q has a zone or port 0", s)
	}
	a := ap.Addr().Unmap()
	return blockAddr{prefix: netip.PrefixFrom(a, a.BitLen()), port: ap.Port()}, nil
}

// String returns the entry in the form parseBlockAddr reads, canonical:
// an address alone, a range, or an address and port.
func (b blockAddr) String() string {
	a := b.prefix.Addr()
	switch {
	case b.port != 0:
		return netip.AddrPortFrom(a, b.port).String()
	case b.prefix.Bits() == a.BitLen():
		return a.String()
	}
	return b.prefix.String()
}

// contains reports whether server is blocked by the entry. IPv4
// addresses in IPv6 form (::ffff:a.b.c.d) are compared as IPv4.
func (b blockAddr) contains(server netip.AddrPort) bool {
	return (b.port == 0 || b.port == server.Port()) && b.prefix.Contains(server.Addr().Unmap())
}

func (r *IPBlockRule) validate() error {
	_, err := r.parse()
	return err
}

// parse parses the block list.
func (r *IPBlockRule) parse() ([]blockAddr, error) {
	if len(r.Addresses) == 0 {
		return nil, errors.New("ip_block rule has no addresses")
	}
	list := make([]blockAddr, 0, len(r.Addresses))
	for _, s := range r.Addresses {
		b, err := parseBlockAddr(s)
		if err != nil {
			return nil, err
		}
		list = append(list, b)
	}
	return list, nil
}

type ipBlockEval struct {
	list []blockAddr
	id   string
}

func newIPBlockEval(r *IPBlockRule, id string) (*ipBlockEval, error) {
	list, err := r.parse()
	return &ipBlockEval{list: list, id: id}, err
}

func (ev *ipBlockEval) verdict(server netip.AddrPort) (Verdict, bool) {
	i := slices.IndexFunc(ev.list, func(b blockAddr) bool { return b.contains(server) })
	if i < 0 {
		return Verdict{}, false
	}
	return Verdict{
		Rule:     ev.id,
		Action:   NullRoute,
		Evidence: fmt.Sprintf("server %v is on the block list (%v): null-routed, SYNs dropped", server, ev.list[i]),
	}, true
}

func (ev *ipBlockEval) admit(_ *Engine, _ netip.Addr, server netip.AddrPort, _ time.Time) (Verdict, bool) {
	return ev.verdict(server)
}

func (ev *ipBlockEval) inspect(*Engine, *Flow, time.Time) (Verdict, bool) {
	return Verdict{}, false
}

// NullRouted reports whether the policy's ip_block rules null-route
// server for every client, with the verdict saying which rule and entry.
// The Middlebox asks it once for its upstream (and then drops the SYNs of
// every connection), the Dialer before each dial.
func (e *Engine) NullRouted(server netip.AddrPort) (Verdict, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.start()
	if e.err != nil {
		return Verdict{}, false
	}
	server = netip.AddrPortFrom(server.Addr().Unmap(), server.Port())
	for _, r := range e.rules {
		if ev, ok := r.(*ipBlockEval); ok {
			if v, ok := ev.verdict(server); ok {
				return v, true
			}
		}
	}
	return Verdict{}, false
}

// WithBlocked returns a copy of p whose first ip_block rule also blocks
// addrs (IP addresses, ranges or IP addresses and ports, as in
// IPBlockRule); when p has no ip_block rule, the copy starts with one
// named "block". p is not changed. The copy is not validated: Validate it,
// or let the engine report a bad address.
func (p *Policy) WithBlocked(addrs ...string) *Policy {
	q := *p
	q.Rules = slices.Clone(p.Rules)
	for i := range q.Rules {
		if r := q.Rules[i].IPBlock; r != nil {
			q.Rules[i].IPBlock = &IPBlockRule{Addresses: append(slices.Clone(r.Addresses), addrs...)}
			return &q
		}
	}
	rule := RuleSpec{Name: "block", IPBlock: &IPBlockRule{Addresses: slices.Clone(addrs)}}
	q.Rules = append([]RuleSpec{rule}, q.Rules...)
	return &q
}
