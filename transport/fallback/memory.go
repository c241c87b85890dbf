package fallback

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/ferry-im/ferry/link"
)

// forgetFailure is how long a failure keeps a transport at the back of the
// order: the GFW's residual blocks last minutes (180 s for fully encrypted
// traffic), its policies change with "sensitive periods".
const forgetFailure = 30 * time.Minute

// maxNetworks bounds the networks a Memory keeps; the least recently used
// are forgotten first.
const maxNetworks = 64

// Memory records, per network, when each transport last worked and last
// failed. The zero value is empty and ready; it is safe for concurrent use
// and encodes to JSON for the client's profile.
type Memory struct {
	mu   sync.Mutex // mu protects nets
	nets map[string]*network
}

type network struct {
	Used       time.Time          `json:"used"`
	Transports map[string]*Record `json:"transports"`
}

// Record is what a Memory knows of one transport on one network.
type Record struct {
	OK     time.Time `json:"ok,omitzero"`     // last success
	Failed time.Time `json:"failed,omitzero"` // last failure
	Reason string    `json:"reason,omitempty"`
}

// Lookup returns what the memory knows of transport on network.
func (m *Memory) Lookup(networkKey, transport string) (Record, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.nets[networkKey]
	if n == nil || n.Transports[transport] == nil {
		return Record{}, false
	}
	return *n.Transports[transport], true
}

func (m *Memory) record(networkKey, transport string, now time.Time) *Record {
	if m.nets == nil {
		m.nets = make(map[string]*network)
	}
	n := m.nets[networkKey]
	if n == nil {
		if len(m.nets) >= maxNetworks {
			m.evict()
		}
		n = &network{Transports: make(map[string]*Record)}
		m.nets[networkKey] = n
	}
	n.Used = now
	r := n.Transports[transport]
	if r == nil {
		r = &Record{}
		n.Transports[transport] = r
	}
	return r
}

func (m *Memory) evict() {
	var oldest string
	var at time.Time
	for k, n := range m.nets {
		if oldest == "" || n.Used.Before(at) {
			oldest, at = k, n.Used
		}
	}
	delete(m.nets, oldest)
}

func (m *Memory) succeeded(networkKey, transport string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record(networkKey, transport, now).OK = now
}

func (m *Memory) failed(networkKey, transport, reason string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.record(networkKey, transport, now)
	r.Failed, r.Reason = now, reason
}

// order sorts eps for a race on networkKey (see Dialer.Order).
func (m *Memory) order(networkKey string, eps []link.Endpoint, now time.Time) []link.Endpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	type ranked struct {
		ep   link.Endpoint
		rank int
		at   time.Time
	}
	rs := make([]ranked, len(eps))
	for i, ep := range eps {
		rs[i] = ranked{ep: ep, rank: 1}
		n := m.nets[networkKey]
		if n == nil || n.Transports[ep.Transport] == nil {
			continue
		}
		r := n.Transports[ep.Transport]
		switch {
		case !r.Failed.IsZero() && !r.Failed.Before(r.OK) && now.Sub(r.Failed) < forgetFailure:
			rs[i].rank, rs[i].at = 2, r.Failed
		case !r.OK.IsZero() && r.OK.After(r.Failed):
			rs[i].rank, rs[i].at = 0, r.OK
		}
	}
	slices.SortStableFunc(rs, func(a, b ranked) int {
		if c := cmp.Compare(a.rank, b.rank); c != 0 {
			return c
		}
		if a.rank == 0 {
			return b.at.Compare(a.at) // the most recent success first
		}
		return a.at.Compare(b.at) // the most recent failure last
	})
	out := make([]link.Endpoint, len(rs))
	for i, r := range rs {
		out[i] = r.ep
	}
	return out
}

// MarshalJSON encodes the memory.
func (m *Memory) MarshalJSON() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return json.Marshal(m.nets)
}

// UnmarshalJSON replaces the memory with an encoded one.
func (m *Memory) UnmarshalJSON(b []byte) error {
	var nets map[string]*network
	if err := json.Unmarshal(b, &nets); err != nil {
		return err
	}
	for k, n := range nets {
		if n == nil || n.Transports == nil {
			delete(nets, k)
			continue
		}
		for t, r := range n.Transports {
			if r == nil {
				delete(n.Transports, t)
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nets = nets
	return nil
}

// NetworkKey returns a key of the network the machine is on: a hash of the
// network prefixes of its up, non-loopback interfaces (so it changes when
// the user moves to another Wi-Fi or to mobile data, and not when an IPv6
// privacy address rotates). It is "offline" when there is none.
func NetworkKey() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return "unknown"
	}
	var prefixes []string
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() {
				prefixes = append(prefixes, (&net.IPNet{IP: ipn.IP.Mask(ipn.Mask), Mask: ipn.Mask}).String())
			}
		}
	}
	if len(prefixes) == 0 {
		return "offline"
	}
	sort.Strings(prefixes)
	prefixes = slices.Compact(prefixes)
	h := sha256.New()
	for _, p := range prefixes {
		h.Write([]byte(p + "\n"))
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
