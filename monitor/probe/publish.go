package probe

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/monitor/ranking"
	"github.com/ferry-im/ferry/transport"
)

// PublisherConfig configures a Publisher. Relay, Key, Cert and Static are
// required; the zero value of every other field works.
type PublisherConfig struct {
	// Relay is the relay whose cells are ranked, and the one the ranking
	// is published to.
	Relay link.Relay
	// Key is the ranking key; Cert its certificate by the relay's key
	// ('ferry-monitor ranking-key' makes both).
	Key  ed25519.PrivateKey
	Cert ranking.Cert
	// Static is the channel key the relay lists as a ranking publisher
	// (ferry-relay --ranking-publisher).
	Static channel.KeyPair
	// Vantage names the network ranked.
	Vantage string
	// Networks are the vantage's address prefixes (its ISP's). If empty,
	// the /24 (IPv4) or /48 (IPv6) around the address the relay sees.
	Networks []netip.Prefix
	// Every is how often the ranking is published again when nothing
	// changes. Default 5 minutes (rankings hold for 2 hours).
	Every time.Duration
	// NetDialer makes the raw connections (the vantage's path). If nil, a
	// net.Dialer.
	NetDialer transport.NetDialer
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
	// Logger receives publications and their failures. If nil, nothing
	// is logged.
	Logger *slog.Logger
}

// Publisher is a monitor.Sink that ranks the transports of one relay from
// the states of its text cells, signs the ranking and publishes it to the
// relay (docs/monitor.md section 12): at once on every change of state,
// and again every Every. It publishes over the transport that works best.
type Publisher struct {
	cfg    PublisherConfig
	dialer *relayclient.Dialer
	relay  string // the cells' relay name

	mu       sync.Mutex // mu protects the fields below
	cells    map[string]monitor.Assessment
	last     time.Time
	networks []netip.Prefix
}

var _ monitor.Sink = (*Publisher)(nil)

// NewPublisher returns a publisher for cfg.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if len(cfg.Relay.Endpoints) == 0 || len(cfg.Key) != ed25519.PrivateKeySize || cfg.Static.Public == ([32]byte{}) {
		return nil, errors.New("new ranking publisher: a relay, a ranking key and a publisher key are needed")
	}
	if cfg.Cert.RelayKey != cfg.Relay.Key || !slices.Equal(cfg.Cert.Key[:], cfg.Key.Public().(ed25519.PublicKey)) {
		return nil, errors.New("the ranking key's certificate is not for this relay and key: make it with 'ferry-monitor ranking-key --relay-data DIR' on the relay's machine")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NetDialer == nil {
		cfg.NetDialer = &net.Dialer{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var entries []transport.Entry
	for _, t := range Transports() {
		entries = append(entries, transport.Entry{Name: t.Name, Dialer: t.New(cfg.NetDialer)})
	}
	reg, err := transport.NewRegistry(entries...)
	if err != nil {
		return nil, err
	}
	p := &Publisher{cfg: cfg, relay: cfg.Relay.Endpoints[0].Addr, cells: map[string]monitor.Assessment{}, networks: cfg.Networks}
	p.dialer = &relayclient.Dialer{Transports: reg, DialTimeout: 10 * time.Second, Rank: p.order, Logger: cfg.Logger}
	return p, nil
}

func (p *Publisher) mine(c monitor.Cell) bool {
	return c.Relay == p.relay && c.Feature == monitor.FeatureText
}

// Trial records the cell's state and publishes when Every has passed.
func (p *Publisher) Trial(ctx context.Context, t *monitor.Trial, a monitor.Assessment) {
	if !p.mine(t.Cell) {
		return
	}
	p.mu.Lock()
	p.cells[t.Transport] = a
	due := p.cfg.Now().Sub(p.last) >= orDuration(p.cfg.Every, 5*time.Minute)
	p.mu.Unlock()
	if due {
		p.publishLogged(ctx)
	}
}

// Change publishes at once.
func (p *Publisher) Change(ctx context.Context, _ *monitor.Event, started monitor.Event) {
	if p.mine(started.Cell) {
		p.publishLogged(ctx)
	}
}

func (p *Publisher) publishLogged(ctx context.Context) {
	if err := p.Publish(ctx); err != nil {
		p.cfg.Logger.Warn("transport ranking not published", "relay", p.relay, "err", err)
	}
}

// Ranking returns the ranking of the cells' current states (unsigned).
func (p *Publisher) Ranking() *ranking.Ranking {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := ranking.Network{Name: p.cfg.Vantage, Prefixes: slices.Clone(p.networks)}
	for tr, a := range p.cells {
		s := ranking.ParseState(string(a.State))
		n.Entries = append(n.Entries, ranking.Entry{Transport: tr, State: s, Score: ranking.Score(s, a.Confidence)})
	}
	slices.SortFunc(n.Entries, func(a, b ranking.Entry) int { return int(b.Score) - int(a.Score) })
	return &ranking.Ranking{Cert: p.cfg.Cert, Networks: []ranking.Network{n}}
}

// order tries the transports the cells rank best first.
func (p *Publisher) order(_ link.Relay, eps []link.Endpoint) ([]link.Endpoint, bool) {
	return ranking.Order(eps, p.Ranking().Networks[0].Entries), true
}

// Publish signs the current ranking and stores it at the relay.
func (p *Publisher) Publish(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cn, err := p.dialer.Dial(ctx, p.cfg.Relay, p.cfg.Static)
	if err != nil {
		return err
	}
	defer cn.Close()
	p.mu.Lock()
	learn := len(p.networks) == 0
	p.mu.Unlock()
	if learn {
		rk, err := cn.GetRanking(ctx)
		if err != nil {
			return fmt.Errorf("learn the vantage's address: %w", err)
		}
		if !rk.Observed.IsValid() {
			return errors.New("the relay cannot tell this vantage's address: give its networks with --network")
		}
		bits := 24
		if rk.Observed.Is6() {
			bits = 48
		}
		pfx, _ := rk.Observed.Prefix(bits)
		p.mu.Lock()
		p.networks = []netip.Prefix{pfx}
		p.mu.Unlock()
	}
	now := p.cfg.Now()
	blob, err := ranking.Sign(p.Ranking(), p.cfg.Key, now)
	if err != nil {
		return err
	}
	if err := cn.PutRanking(ctx, blob); err != nil {
		return fmt.Errorf("publish the transport ranking: %w", err)
	}
	p.mu.Lock()
	p.last = now
	p.mu.Unlock()
	p.cfg.Logger.Info("transport ranking published", "relay", p.relay, "bytes", len(blob))
	return nil
}
