package probe

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/transport"
)

// TargetsConfig says what a monitor probes. Dir and Links are required.
type TargetsConfig struct {
	// Dir holds the probe accounts, one directory per cell.
	Dir string
	// Vantage names where the monitor runs. If empty, "default".
	Vantage string
	// Links are the relays to probe; every endpoint of a known transport
	// becomes a cell per feature.
	Links []link.Relay
	// Features to probe: monitor.FeatureText, monitor.FeatureClientText,
	// monitor.FeatureMediaPut and monitor.FeatureMediaGet. If empty,
	// FeatureText.
	Features []string
	// MediaSizes are the attachments' sizes of the media features. If
	// empty, DefaultMediaSizes.
	MediaSizes []int64
	// MediaBudget bounds the transfers of one media trial (see
	// MediaConfig.Budget). If zero, 80 s.
	MediaBudget time.Duration
	// NetDialer makes every raw connection (a proxy goes here). If nil, a
	// net.Dialer.
	NetDialer transport.NetDialer
	// Control configures the controls; nil for none. Its NetDialer is
	// NetDialer.
	Control *ControlConfig
	// Logger receives the probes' debug events. If nil, nothing is logged.
	Logger *slog.Logger
}

// Targets returns a target per (relay, endpoint, feature), and a warning
// per endpoint whose transport this monitor does not know. It fails when
// there is nothing it can probe.
func Targets(cfg TargetsConfig) ([]monitor.Target, []string, error) {
	if cfg.Vantage == "" {
		cfg.Vantage = "default"
	}
	if len(cfg.Features) == 0 {
		cfg.Features = []string{monitor.FeatureText}
	}
	if cfg.NetDialer == nil {
		cfg.NetDialer = &net.Dialer{}
	}
	var ctl monitor.ControlProbe
	if cfg.Control != nil {
		cc := *cfg.Control
		cc.NetDialer = cfg.NetDialer
		c, err := NewControl(cc)
		if err != nil {
			return nil, nil, err
		}
		ctl = c
	}
	var targets []monitor.Target
	var warnings []string
	for _, r := range cfg.Links {
		ts, ws, err := relayTargets(cfg, r, ctl)
		if err != nil {
			return nil, nil, err
		}
		targets, warnings = append(targets, ts...), append(warnings, ws...)
	}
	if len(targets) == 0 {
		return nil, warnings, errors.New("none of the links' transports are known to this monitor: give a link with a tcp, https or obfs endpoint")
	}
	return targets, warnings, nil
}

// relayTargets returns the targets of one relay.
func relayTargets(cfg TargetsConfig, r link.Relay, ctl monitor.ControlProbe) ([]monitor.Target, []string, error) {
	if len(r.Endpoints) == 0 {
		return nil, nil, errors.New("a link has no endpoint")
	}
	relayName := r.Endpoints[0].Addr
	keyDir := hex.EncodeToString(r.Key[:8])
	var targets []monitor.Target
	var warnings []string
	seen := map[string]int{}
	for _, ep := range r.Endpoints {
		tr, ok := transportByName(ep.Transport)
		if !ok {
			warnings = append(warnings, fmt.Sprintf("the %s endpoint %s is of a transport this monitor does not know; it is not probed", ep.Transport, ep.Addr))
			continue
		}
		seen[ep.Transport]++
		name := ep.Transport
		if n := seen[ep.Transport]; n > 1 {
			name += "#" + strconv.Itoa(n)
		}
		one := link.Relay{Key: r.Key, Endpoints: []link.Endpoint{ep}}
		for _, f := range cfg.Features {
			cell := monitor.Cell{Vantage: cfg.Vantage, Relay: relayName, Feature: f, Transport: name}
			dir := filepath.Join(cfg.Dir, keyDir, f+"-"+name)
			p, err := newProbe(f, dir, one, tr, cfg)
			if err != nil {
				return nil, nil, err
			}
			targets = append(targets, monitor.Target{
				Cell: cell, Endpoint: ep.Transport + "=" + ep.Addr, Probe: p, Control: ctl,
				SharedServer: ctl != nil && cfg.Control.Addr == ep.Addr,
			})
		}
	}
	return targets, warnings, nil
}

func newProbe(feature, dir string, r link.Relay, tr Transport, cfg TargetsConfig) (monitor.Probe, error) {
	switch feature {
	case monitor.FeatureText:
		return NewTextProbe(TextConfig{Dir: dir, Relay: r, Transport: tr, NetDialer: cfg.NetDialer, Logger: cfg.Logger})
	case monitor.FeatureClientText:
		return NewClientProbe(ClientConfig{Dir: dir, Relay: r, Transport: tr, NetDialer: cfg.NetDialer, Logger: cfg.Logger})
	case monitor.FeatureMediaPut, monitor.FeatureMediaGet:
		return NewMediaProbe(MediaConfig{Dir: dir, Relay: r, Transport: tr, NetDialer: cfg.NetDialer, Logger: cfg.Logger,
			Get: feature == monitor.FeatureMediaGet, Sizes: cfg.MediaSizes, Budget: cfg.MediaBudget})
	}
	return nil, fmt.Errorf("feature %q: this monitor probes %v", feature, Features())
}

// Features lists the features this monitor can probe.
func Features() []string {
	return slices.Clone([]string{monitor.FeatureText, monitor.FeatureClientText, monitor.FeatureMediaPut, monitor.FeatureMediaGet})
}
