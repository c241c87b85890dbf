package ferry

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
)

// countingDialer counts the dials it passes on.
type countingDialer struct {
	transport.Dialer
	n atomic.Int32
}

func (d *countingDialer) DialContext(ctx context.Context, ep link.Endpoint) (net.Conn, error) {
	d.n.Add(1)
	return d.Dialer.DialContext(ctx, ep)
}

// TestClientDialsThroughRegistry: the client reaches a relay through the
// dialer its Config.Transports registers for the endpoint's transport.
func TestClientDialsThroughRegistry(t *testing.T) {
	w := newWorld(t)
	net, _ := w.Transports().Lookup("tcp")
	d := &countingDialer{Dialer: net}
	reg, err := transport.NewRegistry(transport.Entry{Name: "tcp", Dialer: d})
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.config(t, "alice")
	cfg.Transports = reg
	c, err := Init(context.Background(), cfg, w.relay.Link.String(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if d.n.Load() == 0 {
		t.Fatal("the registry's tcp dialer was never used")
	}
}

// TestTransportOrder: TransportOrder may name only transports the registry
// has, and the user's relay must offer one of them; each failure is one
// sentence.
func TestTransportOrder(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	alice := w.client(t, "alice", nil)
	alice.Close()
	for _, tt := range []struct {
		order []string
		want  string
	}{
		{[]string{"carrier-pigeon"}, `unknown transport "carrier-pigeon": this Ferry has tcp`},
		{[]string{"tcp"}, ""},
	} {
		cfg := alice.cfg
		cfg.TransportOrder = tt.order
		c, err := Open(ctx, cfg)
		if tt.want == "" {
			if err != nil {
				t.Fatalf("order %v: %v", tt.order, err)
			}
			c.Close()
			continue
		}
		if err == nil || err.Error() != tt.want {
			t.Fatalf("order %v: got %v, want %q", tt.order, err, tt.want)
		}
		if !errors.Is(err, ErrUnknownTransport) {
			t.Fatalf("order %v: %v is not ErrUnknownTransport", tt.order, err)
		}
	}
	// A registry with a second transport the relay does not offer.
	tcp, _ := w.Transports().Lookup("tcp")
	reg, _ := transport.NewRegistry(transport.Entry{Name: "tcp", Dialer: tcp}, transport.Entry{Name: "https", Dialer: tcp})
	cfg := alice.cfg
	cfg.Transports, cfg.TransportOrder = reg, []string{"https"}
	if _, err := Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "your relay's link offers tcp, not https") {
		t.Fatalf("an order the relay does not offer: got %v", err)
	}
}
