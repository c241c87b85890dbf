// Package clienttest is the client's test harness: real relays
// (relay/relaytest) on an in-memory network (transporttest.Network), every
// client connection seen through an in-process censor (censor.Engine.Wrap),
// and one fake clock (censor.FakeClock) for the clients and the censor. A
// test takes relays down and brings them back, injects store faults (busy,
// stalled, lost acks), reads what a relay holds, and records which
// mailboxes each relay connection touched.
//
// It is test support: production code never imports it. It does not import
// the client library, so the client's internal packages can use it too.
package clienttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/transporttest"
)

// Epoch is where the harness's clock starts.
var Epoch = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// Harness is one test's network, censor and clock.
type Harness struct {
	// Clock is the fake clock: give Clock.Now to clients, advance it to
	// expire invites, rotate prekeys or release held messages.
	Clock *censor.FakeClock
	// Net is the in-memory network the relays listen on.
	Net *transporttest.Network

	tb     testing.TB
	mu     sync.Mutex     // mu protects censor, port and addrs
	censor *censor.Engine // sees every connection dialed through Transports
	port   uint16
	addrs  int
}

// New returns a harness whose resources are released when tb ends.
func New(tb testing.TB) *Harness {
	clk := &censor.FakeClock{}
	clk.Set(Epoch)
	h := &Harness{Clock: clk, Net: &transporttest.Network{}, censor: &censor.Engine{Clock: clk}, tb: tb, port: 40000}
	tb.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.censor.Close()
	})
	return h
}

// Censor makes the censor play the named policy (censor.LoadPolicy: a
// name of censor/policies or a file) from now on, for new connections;
// "open" lets everything pass. It starts afresh, forgetting the state the
// last policy left (blocked addresses).
func (h *Harness) Censor(policy string) *censor.Engine {
	h.tb.Helper()
	p, err := censor.LoadPolicy(policy)
	if err != nil {
		h.tb.Fatal(err)
	}
	e := &censor.Engine{Policy: p, Clock: h.Clock}
	if err := e.Check(); err != nil {
		h.tb.Fatal(err)
	}
	h.mu.Lock()
	old := h.censor
	h.censor = e
	h.mu.Unlock()
	old.Close()
	return e
}

// Transports returns a registry whose "tcp" transport dials the harness's
// network through its censor. Dials to an address where nobody listens
// fail as TCP's do (connection refused).
func (h *Harness) Transports() *transport.Registry {
	reg, err := transport.NewRegistry(transport.Entry{Name: "tcp", Dialer: (*dialer)(h)})
	if err != nil {
		h.tb.Fatal(err)
	}
	return reg
}

// dialer is the harness as a transport.Dialer.
type dialer Harness

var _ transport.Dialer = (*dialer)(nil)

// clientAddr is the address the censor sees for every client.
var clientAddr = netip.MustParseAddr("10.0.0.2")

func (d *dialer) DialContext(ctx context.Context, ep link.Endpoint) (net.Conn, error) {
	h := (*Harness)(d)
	c, err := h.Net.DialContext(ctx, ep)
	if errors.Is(err, transporttest.ErrRefused) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	if err != nil {
		return nil, err
	}
	server, err := netip.ParseAddrPort(ep.Addr)
	if err != nil {
		server = netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), 443)
	}
	h.mu.Lock()
	h.port++
	client := netip.AddrPortFrom(clientAddr, h.port)
	e := h.censor
	h.mu.Unlock()
	return e.Wrap(c, client, server), nil
}

// nextAddr returns a fresh relay address on the network.
func (h *Harness) nextAddr() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addrs++
	return fmt.Sprintf("127.0.0.%d:7443", h.addrs+1)
}
