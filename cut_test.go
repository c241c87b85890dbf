package ferry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/relay/relaytest"
	"github.com/ferry-im/ferry/transport/fallback/fallbacktest"
)

// cutRelay is a real relay on loopback reachable over obfs and tcp, each
// through a Cutter (a censor that can start dropping one transport).
type cutRelay struct {
	link    link.Relay
	cutters map[string]*fallbacktest.Cutter
}

func startCutRelay(t testing.TB) *cutRelay {
	rt := relaytest.Start(t, nil)
	osrv := fallbacktest.ObfsServer(t, time.Second)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ol := osrv.Listener(raw)
	var wg sync.WaitGroup
	t.Cleanup(func() { ol.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ol.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { rt.Server.ServeConn(context.Background(), c) })
		}
	})
	r := &cutRelay{link: link.Relay{Key: rt.Key.Public}, cutters: map[string]*fallbacktest.Cutter{}}
	for _, ep := range []link.Endpoint{osrv.Endpoint(raw.Addr().String()), rt.Link.Endpoints[0]} {
		c, err := fallbacktest.NewCutter(ep.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		r.cutters[ep.Transport] = c
		ep.Addr = c.Addr()
		r.link.Endpoints = append(r.link.Endpoints, ep)
	}
	return r
}

// arrivals collects the texts a client receives and when.
type arrivals struct {
	mu    sync.Mutex
	texts []string
	at    []time.Time
}

func (a *arrivals) add(ms []*Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range ms {
		a.texts = append(a.texts, m.Text())
		a.at = append(a.at, time.Now())
	}
}

func (a *arrivals) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.texts)
}

// conversing starts alice and bob on r, contacts of each other, both
// running a background Sync (as the chat does) until the test ends.
func conversing(t testing.TB, r *cutRelay) (alice, bob *Client, got *arrivals) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	dir := t.TempDir()
	var cs []*Client
	for _, name := range []string{"alice", "bob"} {
		c, err := Init(ctx, Config{Home: filepath.Join(dir, name), Transports: DefaultTransports(nil)}, r.link.String(), name)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	alice, bob, got = cs[0], cs[1], &arrivals{}
	t.Cleanup(func() { cancel(); wg.Wait(); alice.Close(); bob.Close() })
	tt, ok := t.(*testing.T)
	if !ok {
		tt = &testing.T{}
	}
	introduce(tt, alice, bob)
	for _, c := range cs {
		opts := SyncOptions{Wait: time.Hour}
		if c == bob {
			opts.OnMessages = got.add
		}
		wg.Go(func() { c.Sync(ctx, opts) })
	}
	return alice, bob, got
}

// TestMidSessionCut: while alice sends 100 messages to bob, one every 20
// ms, the censor starts dropping everything on the transport in use after
// 30. Delivery must resume over the other transport within 5 s, and bob
// gets every message exactly once and in order.
func TestMidSessionCut(t *testing.T) {
	r := startCutRelay(t)
	alice, bob, got := conversing(t, r)
	ctx := context.Background()
	to := conv(t, alice, "bob")
	var cutAt time.Time
	var first string
	cutOff := map[*Client]bool{} // the clients on the cut transport
	for i := 1; i <= 100; i++ {
		if i == 31 {
			rt, _ := alice.Route()
			first = rt.Transport
			r.cutters[first].Cut()
			cutAt = time.Now()
			// Each client raced the endpoints on its own: under load the
			// other transport can win one race, and a client on it is
			// not cut.
			for _, c := range []*Client{alice, bob} {
				rt, _ := c.Route()
				cutOff[c] = rt.Transport == first
			}
		}
		if _, err := alice.Send(ctx, to, strconv.Itoa(i)); err != nil && !errors.Is(err, ErrQueued) {
			t.Fatalf("send %d: %v", i, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	deadline := time.Now().Add(30 * time.Second)
	for got.count() < 100 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got.mu.Lock()
	defer got.mu.Unlock()
	want := make([]string, 100)
	for i := range want {
		want[i] = strconv.Itoa(i + 1)
	}
	if !slices.Equal(got.texts, want) {
		t.Fatalf("bob got %d messages %v, want 1..100 once each, in order", len(got.texts), got.texts)
	}
	resumed := got.at[30].Sub(cutAt)
	if resumed > 5*time.Second {
		t.Fatalf("delivery resumed %v after the cut, want within 5 s", resumed)
	}
	for _, c := range []*Client{alice, bob} {
		rt, _ := c.Route()
		if rt.Transport == first || (cutOff[c] && rt.Why == "") {
			t.Errorf("%s's route after the cut of %s (on it when cut: %v): %+v, want another transport, and why if it was on it", c.Name(), first, cutOff[c], rt)
		}
	}
	t.Logf("cut %s after 30 messages; delivery resumed %v later; %s now: %s", first, resumed.Round(time.Millisecond), alice.Name(), routeString(alice))
}

func routeString(c *Client) string {
	rt, _ := c.Route()
	return fmt.Sprintf("%s (%s)", rt.Transport, rt.Why)
}

// BenchmarkRecovery cuts the transport alice and bob use 50 times (lifting
// each cut once they have moved) and reports the time from each cut to
// the delivery to bob of the first message alice sent after it: p50 and
// p99.
func BenchmarkRecovery(b *testing.B) {
	for b.Loop() {
		r := startCutRelay(b)
		alice, _, got := conversing(b, r)
		to := conv(&testing.T{}, alice, "bob")
		var times []time.Duration
		n := 0
		for range 50 {
			rt, _ := alice.Route()
			r.cutters[rt.Transport].Cut()
			cutAt := time.Now()
			n++
			alice.Send(context.Background(), to, strconv.Itoa(n))
			for got.count() < n {
				time.Sleep(5 * time.Millisecond)
			}
			got.mu.Lock()
			times = append(times, got.at[n-1].Sub(cutAt))
			got.mu.Unlock()
			r.cutters[rt.Transport].Restore()
		}
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		b.ReportMetric(times[len(times)/2].Seconds(), "p50-s")
		b.ReportMetric(times[len(times)*99/100].Seconds(), "p99-s")
	}
}
