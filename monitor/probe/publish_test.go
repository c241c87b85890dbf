package probe

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ferry-im/ferry/internal/rankcache"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/monitor/ranking"
	"github.com/ferry-im/ferry/transport"
)

// TestClosedLoop: the monitor probes tcp, https and obfs through the
// censor under tls-gate and publishes its ranking to the relay; a client
// on the same network fetches it with its other traffic and orders the
// relay's link with https first and the blocked transports last. When the
// policy changes to open, the next ranking puts them back.
func TestClosedLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := newTestbed(t)
		defer tb.close()
		tb.setPolicy("tls-gate", 1)
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		cert, err := ranking.NewCert(tb.key.Private, key.Public().(ed25519.PublicKey), time.Now().Add(24*time.Hour), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := NewPublisher(PublisherConfig{Relay: tb.link, Key: key, Cert: cert, Static: tb.publisher, Vantage: "testbed", NetDialer: tb, Every: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		var targets []monitor.Target
		for _, name := range []string{"tcp", "https", "obfs"} {
			ep := tb.link1(name).Endpoints[0]
			targets = append(targets, monitor.Target{
				Cell:     monitor.Cell{Vantage: "testbed", Relay: tb.link.Endpoints[0].Addr, Feature: monitor.FeatureText, Transport: name},
				Endpoint: name + "=" + ep.Addr, Probe: tb.textProbe(t, name), Control: tb.control(t),
			})
		}
		r, err := monitor.NewRunner(monitor.Config{Targets: targets, Interval: 10 * time.Second, Sinks: []monitor.Sink{pub}, Thresholds: monitor.Thresholds{Quiet: time.Minute}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); r.Run(ctx) }()
		time.Sleep(2 * time.Minute)
		if got := fetchOrder(t, tb); got != "https tcp obfs" {
			t.Errorf("under tls-gate the client orders %q, want https first, then the blocked ones", got)
		}
		tb.setPolicy("open", 2)
		time.Sleep(150 * time.Second) // past the quiet period after the block
		if got := fetchOrder(t, tb); got != "tcp https obfs" {
			t.Errorf("under open the client orders %q, want the link's order (all ok)", got)
		}
		cancel()
		<-done
	})
}

// fetchOrder fetches the relay's rankings as a client of the vantage does
// and returns the order it would dial the link's endpoints in.
func fetchOrder(t *testing.T, tb *testbed) string {
	t.Helper()
	var entries []transport.Entry
	for _, tr := range Transports() {
		entries = append(entries, transport.Entry{Name: tr.Name, Dialer: tr.New(tb)})
	}
	reg, err := transport.NewRegistry(entries...)
	if err != nil {
		t.Fatal(err)
	}
	cache := &rankcache.Cache{RelayKey: tb.key.Public}
	d := &relayclient.Dialer{Transports: reg, Order: []string{"https"}}
	cn, err := d.Dial(t.Context(), tb.link, tb.publisher)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	if err := cache.Fetch(t.Context(), cn); err != nil {
		t.Fatal(err)
	}
	var names []string
	eps, _ := cache.Order(tb.link, tb.link.Endpoints)
	for _, ep := range eps {
		names = append(names, ep.Transport)
	}
	return strings.Join(names, " ")
}
