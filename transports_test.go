package ferry_test

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/ferry-im/ferry"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/tcp"
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
	s, stop, err := localRelay("")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	d := &countingDialer{Dialer: tcp.New(tcp.Config{})}
	reg, err := transport.NewRegistry(transport.Entry{Name: tcp.Name, Dialer: d})
	if err != nil {
		t.Fatal(err)
	}
	cfg := ferry.Config{Home: filepath.Join(t.TempDir(), "alice"), Transports: reg}
	c, err := ferry.Init(context.Background(), cfg, s, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Invite(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d.n.Load() == 0 {
		t.Fatal("the registry's tcp dialer was never used")
	}
}
